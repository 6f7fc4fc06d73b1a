"""The CNN hypermodel: a pure function from hyperparameters to a compiled Keras model.

Searched hyperparameters (see `search_space` in the experiment YAML):
  init          filters of the first convolution block; each further block doubles them
  rate          dropout rate after every block and dense layer
  depth         number of dense layers in the head
  learning_rate Adam step size
Fixed architecture choices come from `ModelConfig`. The training-only augmentation
layers every family shares live here too.
"""
from __future__ import annotations

import math
from typing import Mapping

import keras
from keras import layers, ops

from mammo_core.config import AugmentationConfig, ModelConfig
from mammo_core.recipe import resolve

AUGMENTATION = "augmentation"  # the training-only stack; explanations remove it


@keras.saving.register_keras_serializable(package="mammo")
class RandomRot90(layers.Layer):
    """Rotates each image by a random multiple of 90 degrees, in training only.

    Keras' RandomRotation interpolates arbitrary angles; right angles keep pixels exact,
    which matters for clusters of 2-3 pixel calcifications.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        turned = ops.flip(ops.transpose(inputs, (0, 2, 1, 3)), axis=2)  # +90 degrees
        rotations = [inputs, turned, ops.flip(ops.flip(inputs, 1), 2), ops.flip(turned, (1, 2))]
        choice = keras.random.randint((ops.shape(inputs)[0],), 0, 4, seed=self.seed_generator)
        mask = ops.reshape(ops.one_hot(choice, 4), (-1, 4, 1, 1, 1))
        return ops.sum(ops.stack(rotations, axis=1) * ops.cast(mask, inputs.dtype), axis=1)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="mammo")
class RandomContrastAroundMean(layers.Layer):
    """Scales each image's deviation from its mean by a factor in [1-f, 1+f] (uniform) or
    [1/(1+f), 1+f] (log_uniform: uniform in log scale), training only.

    Unlike keras.layers.RandomContrast it does not clip to a value range, so it works on
    the signed output of the wavelet filter.
    """

    def __init__(self, factor: float, seed: int | None = None, scale: str = "uniform",
                 **kwargs):
        super().__init__(**kwargs)
        self.factor, self.seed, self.scale = factor, seed, scale
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.factor == 0:
            return inputs
        shape = (ops.shape(inputs)[0], 1, 1, 1)
        if self.scale == "log_uniform":
            top = math.log1p(self.factor)
            scale = ops.exp(keras.random.uniform(shape, -top, top, seed=self.seed_generator))
        else:
            scale = keras.random.uniform(shape, 1 - self.factor, 1 + self.factor,
                                         seed=self.seed_generator)
        mean = ops.mean(inputs, axis=(1, 2, 3), keepdims=True)
        return (inputs - mean) * ops.cast(scale, inputs.dtype) + mean

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "seed": self.seed,
                "scale": self.scale}


@keras.saving.register_keras_serializable(package="mammo")
class RandomRotationSteps(layers.Layer):
    """Rotates each image about its centre by a random multiple of `step` degrees (0,
    step, 2 step, ... below 360), bilinear, corners filled with 0, in training only: the
    MIAS study's 180 copies of every image at 2-degree steps, drawn instead of stored."""

    def __init__(self, step: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.step, self.seed = float(step), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.step <= 0:
            return inputs
        n, height, width = ops.shape(inputs)[0], ops.shape(inputs)[1], ops.shape(inputs)[2]
        turns = keras.random.randint((n,), 0, max(int(round(360 / self.step)), 1),
                                     seed=self.seed_generator)
        angle = ops.cast(turns, "float32") * (self.step * math.pi / 180)
        cos, sin = ops.cos(angle), ops.sin(angle)
        cx = (ops.cast(width, "float32") - 1) / 2
        cy = (ops.cast(height, "float32") - 1) / 2
        # output pixel (x, y) reads input (a0 x + a1 y + a2, b0 x + b1 y + b2)
        zero = ops.zeros_like(cos)
        transform = ops.stack([cos, -sin, cx - cos * cx + sin * cy,
                               sin, cos, cy - sin * cx - cos * cy, zero, zero], axis=1)
        return ops.image.affine_transform(inputs, ops.cast(transform, inputs.dtype),
                                          interpolation="bilinear", fill_mode="constant")

    def get_config(self):
        return {**super().get_config(), "step": self.step, "seed": self.seed}


def augmentation(config: AugmentationConfig, seed: int) -> keras.Sequential:
    """Returns the training-only augmentation stack (identity at inference)."""
    stack = []
    if config.flip:
        stack.append(layers.RandomFlip("horizontal_and_vertical", seed=seed))
    if config.rotate90:
        stack.append(RandomRot90(seed=seed + 1))
    if config.rotate_degrees > 0:
        stack.append(RandomRotationSteps(config.rotate_degrees, seed=seed + 3))
    if config.contrast > 0:
        stack.append(RandomContrastAroundMean(config.contrast, seed=seed + 2,
                                              scale=config.contrast_scale))
    # an empty Sequential cannot be built: a model without augmentation gets the identity
    return keras.Sequential(stack or [layers.Identity()], name=AUGMENTATION)


def output_layer(n_classes: int, init="glorot_uniform") -> layers.Dense:
    """Returns the output layer `probability`: one sigmoid unit for two classes, else a
    softmax over `n_classes`."""
    if n_classes == 2:
        return layers.Dense(1, activation="sigmoid", kernel_initializer=init, name="probability")
    return layers.Dense(n_classes, activation="softmax", kernel_initializer=init,
                        name="probability")


def compile_classifier(model: keras.Model, optimizer, n_classes: int) -> keras.Model:
    """Compiles `model`; returns it. Two classes: binary cross-entropy with `auc` and
    `accuracy`. More: sparse categorical cross-entropy with `accuracy`; the validation
    macro AUC (`val_auc`) is added each epoch by training.MacroAUC, since Keras' AUC
    metric does not take integer labels of several classes."""
    if n_classes == 2:
        model.compile(optimizer=optimizer, loss="binary_crossentropy",
                      metrics=[keras.metrics.AUC(name="auc"),
                               keras.metrics.BinaryAccuracy(name="accuracy")])
    else:
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


def build_model(hp: Mapping[str, float], input_shape: tuple[int, int, int],
                config: ModelConfig, seed: int = 0, n_classes: int = 2) -> keras.Model:
    """Returns the compiled classifier for the hyperparameters `hp` (see compile_classifier
    for its output and metrics), trained with the project's recipe (Adam, `learning_rate`)."""
    network = build_network(hp, input_shape, config, seed, n_classes)
    optimizer = resolve("hypermodel", hp, config.optimizer).make_optimizer()
    return compile_classifier(network, optimizer, n_classes)


def build_network(hp: Mapping[str, float], input_shape: tuple[int, int, int],
                  config: ModelConfig, seed: int = 0, n_classes: int = 2) -> keras.Model:
    """Returns the hypermodel's network for `hp` (uncompiled): augmentation, `conv_blocks`
    conv blocks of init * 2^k filters, the pooled head of `depth` halving dense layers."""
    if config.augmentation.rotate90 and input_shape[0] != input_shape[1]:
        raise ValueError(f"rotate90 augmentation needs square images, got {input_shape[:2]}")
    init, depth, rate = int(hp["init"]), int(hp["depth"]), float(hp["rate"])
    inputs = keras.Input(shape=input_shape, name="patch")
    x = augmentation(config.augmentation, seed)(inputs)
    for block in range(config.conv_blocks):
        x = _conv_block(x, init * 2 ** block, config, rate, block)
    x = _pooling(config.pooling)(x)
    for index in range(depth):
        x = layers.Dense(max(config.dense_units // 2 ** index, 1), activation="relu",
                         name=f"dense_{index}")(x)
        x = layers.Dropout(rate)(x)
    return keras.Model(inputs, output_layer(n_classes)(x), name="mammo_cnn")


def _conv_block(x, filters: int, config: ModelConfig, rate: float, index: int):
    # The bias is redundant before BatchNormalization, which adds its own offset.
    x = layers.Conv2D(filters, config.kernel_size, padding="same", use_bias=False,
                      name=f"conv_{index}")(x)
    x = layers.BatchNormalization(momentum=config.batchnorm_momentum, name=f"bn_{index}")(x)
    x = layers.Activation("relu")(x)
    x = layers.MaxPooling2D(name=f"pool_{index}")(x)
    return layers.Dropout(rate)(x)


def _pooling(kind: str) -> layers.Layer:
    return {"flatten": layers.Flatten, "avg": layers.GlobalAveragePooling2D,
            "max": layers.GlobalMaxPooling2D}[kind](name=f"{kind}_head")
