"""Orchestration on top of mammo_core: entry points, searches and the registry step."""
import logging
import os

# TensorFlow's C++ start-up banner (CPU features, oneDNN) buries the status lines users
# read; warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Download bars for tiny JSON/CSV artifacts interleave with the search's status line.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# Tune's console output (a configuration box per fold, a TensorBoard hint) says nothing
# the status line (tune/progress.py) does not; its legacy reporter at verbose=0 is silent.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Scoring several experts, or one expert on batches of several sizes, retraces its predict
# function: Keras logs each as a warning that is expected here and alarms users.
logging.getLogger("tensorflow").addFilter(
    lambda record: "triggered tf.function retracing" not in record.getMessage())

# Ray reads this once, when it is first imported, so it is set here, before any module of
# this package imports ray. With it, a local node binds 127.0.0.1 only; without it, Ray
# binds the machine's network address and opens its ports to the network. A run that
# joins a cluster (RAY_ADDRESS) must not set it. An empty RAY_ADDRESS (the MLproject
# default) means "local".
if not os.environ.get("RAY_ADDRESS"):
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
