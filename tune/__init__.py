"""Orchestration on top of mammo_core: entry points, searches and the registry step."""
import os

# TensorFlow's C++ start-up banner (CPU features, oneDNN) buries the status lines users
# read; warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
