"""Model families: each a pure function (hyperparameters, input shape, config) -> compiled model.

Every family keeps the contract the pipeline relies on, so any of them can be searched,
compared, ensembled, registered, served and explained alike:

- input: preprocessed patches (H, W, 1); output `probability`: one sigmoid unit for two
  classes, a softmax for more (hypermodel.output_layer);
- compiled metrics `auc` and `accuracy` (the same metric names in MLflow for every family);
- the training-only augmentation stack first (named AUGMENTATION), then the network as
  one nested model named BODY, so explanations take the body as it is (shared weights).

Families:
  hypermodel          the searched CNN of mammo_core.hypermodel (init, rate, depth, ...)
  microcal_cnn        the microcalcification study's fixed CNN: four conv blocks (BatchNorm,
                      max pooling), dropout, dense head
  mass_calc_m0 .. m5  the CBIS mass-vs-calcification study's six variants, each adding one
                      thing to the previous (see MASS_CALC)
  mias_cnn            the MIAS whole-mammogram CNN: 128x128 input only, RandomNormal(0, 0.02)
  vgg16, inception_v3 keras.applications backbones behind a learned 1x1 conv (1 -> 3
                      channels), upsized to the backbone's minimum, cut at `cut`, with
                      `trainable_layers` fine-tuned and a dense head (model.backbone)
  siamese             one shared encoder (any family above without its output layer,
                      model.siamese.trunk) over a (baseline, abnormal) pair of patches,
                      input (2, H, W, 1); merged as [abnormal - baseline, baseline, abnormal]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import keras
from keras import layers

from mammo_core.config import AugmentationConfig, ModelConfig
from mammo_core.hypermodel import AUGMENTATION, augmentation, compile_classifier, output_layer
from mammo_core.registry import FAMILIES

BODY = "body"
ENCODER = "encoder"  # the siamese family's shared trunk
# the siamese head after the two encodings: merge, dense, dropout (then `probability`)
PAIR_HEAD = ("merge", "pair_head", "pair_dropout")
FEATURES = "features"  # the backbones' last feature map: what Grad-CAM looks at


def family_of(hp: Mapping, config: ModelConfig) -> str:
    """Returns the family a configuration builds: `hp["family"]` if searched, else the config's."""
    return str(hp.get("family", config.family))


def build_model(hp: Mapping, input_shape: tuple[int, int, int], config: ModelConfig,
                seed: int = 0, n_classes: int = 2) -> keras.Model:
    """Returns the compiled classifier of the configuration's family, for `n_classes`.

    Raises ValueError for an unknown family or an input the family cannot take.
    """
    family = family_of(hp, config)
    return FAMILIES.load(family)(hp, tuple(input_shape), config, seed, n_classes)


def family_of_model(model: keras.Model) -> str:
    """Returns the family a built (or loaded) model belongs to; each family names its model."""
    return model.name if model.name in FAMILIES else "hypermodel"


def count_params(model: keras.Model) -> int:
    """Returns the number of weights of the model, trainable or not."""
    return int(sum(int(w.numpy().size) for w in model.weights))


# --- the fixed published CNNs -----------------------------------------------------------

def microcal_cnn(hp: Mapping, input_shape: tuple, config: ModelConfig, seed: int,
                 n_classes: int = 2) -> keras.Model:
    """The microcalcification study's CNN: 4 x (conv 3x3, BatchNorm, ReLU, max pool, dropout)
    with 16, 32, 64, 128 filters, then Dense(128) and dropout; Adam."""
    _need_min_side("microcal_cnn", input_shape, 16)
    rate = float(hp.get("rate", 0.3))
    inputs = keras.Input(input_shape)
    x = inputs
    for index, filters in enumerate((16, 32, 64, 128)):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv_{index}")(x)
        x = layers.BatchNormalization(momentum=config.batchnorm_momentum)(x)
        x = layers.MaxPooling2D()(layers.Activation("relu")(x))
        x = layers.Dropout(rate)(x)
    x = layers.Dropout(rate)(layers.Dense(128, activation="relu")(layers.Flatten()(x)))
    return _assemble("microcal_cnn", inputs, x, config.augmentation, seed,
                     keras.optimizers.Adam(float(hp.get("learning_rate", 1e-3))), n_classes)


@dataclass(frozen=True)
class MassCalcVariant:
    filters: tuple[int, ...]
    dense: int
    dropout: bool
    augment: bool
    rmsprop: bool  # RMSprop lr 1e-3 with inverse-time decay 1e-6 (Keras 2's `decay`)
    l2: float


# M0 baseline; M1 + dropout; M2 + augmentation; M3 + a 128-filter conv, Dense(48), RMSprop;
# M4 + a 256-filter conv; M5 + L2 5e-5 on the conv kernels. The study's batch size 128 and
# early stopping of M3+ are training settings: here `training.batch_size` and the search's
# scheduler apply to every family alike.
MASS_CALC = (
    MassCalcVariant((32, 64), 64, False, False, False, 0.0),
    MassCalcVariant((32, 64), 64, True, False, False, 0.0),
    MassCalcVariant((32, 64), 64, True, True, False, 0.0),
    MassCalcVariant((32, 64, 128), 48, True, True, True, 0.0),
    MassCalcVariant((32, 64, 128, 256), 48, True, True, True, 0.0),
    MassCalcVariant((32, 64, 128, 256), 48, True, True, True, 5e-5),
)


def mass_calc(variant: int) -> Callable[..., keras.Model]:
    """Returns the builder of the mass-vs-calcification study's model `variant` (0..5)."""
    spec = MASS_CALC[variant]

    def build(hp: Mapping, input_shape: tuple, config: ModelConfig, seed: int,
              n_classes: int = 2) -> keras.Model:
        _need_min_side(f"mass_calc_m{variant}", input_shape, 2 ** len(spec.filters))
        inputs = keras.Input(input_shape)
        x = inputs
        regularizer = keras.regularizers.L2(spec.l2) if spec.l2 else None
        for index, filters in enumerate(spec.filters):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                              kernel_regularizer=regularizer, name=f"conv_{index}")(x)
            x = layers.MaxPooling2D()(x)
            x = layers.Dropout(0.25)(x) if spec.dropout else x
        x = layers.Dense(spec.dense, activation="relu")(layers.Flatten()(x))
        x = layers.Dropout(0.5)(x) if spec.dropout else x
        rate = float(hp.get("learning_rate", 1e-3))
        optimizer = (keras.optimizers.RMSprop(keras.optimizers.schedules.InverseTimeDecay(
            rate, decay_steps=1, decay_rate=1e-6)) if spec.rmsprop
            else keras.optimizers.Adam(rate))
        stack = (config.augmentation if spec.augment
                 else AugmentationConfig(flip=False, rotate90=False, contrast=0.0))
        return _assemble(f"mass_calc_m{variant}", inputs, x, stack, seed, optimizer, n_classes)
    return build


MIAS_SIZE = (128, 128)


def mias_cnn(hp: Mapping, input_shape: tuple, config: ModelConfig, seed: int,
             n_classes: int = 2) -> keras.Model:
    """The MIAS whole-mammogram CNN: 128x128 only; conv 32/64/128 with max pooling,
    Dense(128), dropout 0.5, every kernel drawn from RandomNormal(0, 0.02); Adam."""
    if tuple(input_shape[:2]) != MIAS_SIZE:
        raise ValueError(f"mias_cnn takes {MIAS_SIZE[0]}x{MIAS_SIZE[1]} images (the MIAS "
                         f"study's input), got {input_shape[0]}x{input_shape[1]}: set "
                         "data.image_size to [128, 128]")
    init = keras.initializers.RandomNormal(0.0, 0.02, seed=seed)
    inputs = keras.Input(input_shape)
    x = inputs
    for index, filters in enumerate((32, 64, 128)):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                          kernel_initializer=init, name=f"conv_{index}")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Dense(128, activation="relu", kernel_initializer=init)(layers.Flatten()(x))
    x = layers.Dropout(0.5)(x)
    return _assemble("mias_cnn", inputs, x, config.augmentation, seed,
                     keras.optimizers.Adam(float(hp.get("learning_rate", 1e-3))), n_classes,
                     output_init=init)


# --- ImageNet backbones -----------------------------------------------------------------

@dataclass(frozen=True)
class Backbone:
    application: Callable[..., keras.Model]
    min_side: int  # keras.applications refuses smaller inputs
    cuts: tuple[str, ...]  # layer ending each block, last block first: top, top+1, ...
    weights_file: str  # the no-top ImageNet file Keras downloads into ~/.keras/models


BACKBONES = {
    "vgg16": Backbone(keras.applications.VGG16, 32,
                      tuple(f"block{k}_pool" for k in range(5, 0, -1)),
                      "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "inception_v3": Backbone(keras.applications.InceptionV3, 75,
                             tuple(f"mixed{k}" for k in range(10, -1, -1)),
                             "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
}


def backbone(family: str) -> Callable[..., keras.Model]:
    """Returns the builder of an ImageNet backbone family."""
    spec = BACKBONES[family]

    def build(hp: Mapping, input_shape: tuple, config: ModelConfig, seed: int,
              n_classes: int = 2) -> keras.Model:
        options = config.backbone
        cut = _cut_layer(family, str(hp.get("cut", options.cut)), spec.cuts)
        trainable = hp.get("trainable_layers", options.trainable_layers)
        side = max(spec.min_side, *input_shape[:2])
        inputs = keras.Input(input_shape)
        x = layers.Conv2D(3, 1, name="to_rgb")(inputs)  # learned 1 -> 3 channel map
        if tuple(input_shape[:2]) != (side, side):
            x = layers.Resizing(side, side, name="upsize")(x)
        trunk = spec.application(include_top=False, weights=None, input_tensor=x)
        ours = {"to_rgb", "upsize", inputs.name}
        base = [layer for layer in trunk.layers if layer.name not in ours
                and not isinstance(layer, keras.layers.InputLayer)]
        if options.weights:
            _load_backbone_weights(family, spec, options.weights, (side, side, 3), base)
        kept = base[:[layer.name for layer in base].index(cut) + 1]
        _set_trainable(kept, trainable)
        x = layers.Identity(name=FEATURES)(trunk.get_layer(cut).output)
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dense(int(hp.get("head_units", options.head_units)), activation="relu")(x)
        x = layers.Dropout(options.dropout)(x)
        return _assemble(family, inputs, x, config.augmentation, seed,
                         keras.optimizers.Adam(float(hp.get("learning_rate", 1e-4))), n_classes)
    return build


def _cut_layer(family: str, cut: str, cuts: tuple[str, ...]) -> str:
    """Returns the layer that ends the backbone: "top" is the last block, "top+k" k earlier."""
    depth = 0 if cut == "top" else int(cut[4:]) if cut.startswith("top+") and cut[4:].isdigit() \
        else -1
    if not 0 <= depth < len(cuts):
        raise ValueError(f"{family}: cut must be 'top' or 'top+k' with k < {len(cuts)}, "
                         f"got '{cut}'")
    return cuts[depth]


def _set_trainable(kept: list, trainable) -> None:
    """Fine-tunes the last `trainable` backbone layers (None: all) and freezes the rest."""
    count = len(kept) if trainable is None else int(trainable)
    for index, layer in enumerate(kept):
        layer.trainable = index >= len(kept) - count


def _load_backbone_weights(family: str, spec: Backbone, weights: str, shape: tuple,
                           base: list) -> None:
    """Copies `weights` (imagenet or a weights file) into the backbone's layers, in order.

    The backbone is built once more on its own, as keras.applications ships it, loads the
    weights there (Keras' own loader and checks), and hands them over layer by layer:
    inside our model its layers sit behind the 1x1 conv, which the file does not know.
    Raises ValueError with one line that says how to supply the file if it cannot be had.
    """
    source = weights if weights == "imagenet" else str(Path(weights).expanduser())
    try:
        reference = spec.application(include_top=False, weights=source, input_shape=shape)
    except Exception as err:  # noqa: BLE001 — a failed download or an unreadable file
        raise ValueError(
            f"cannot load {family} weights '{weights}' ({type(err).__name__}: {err}). Offline? "
            f"Place {spec.weights_file} in ~/.keras/models/ (Keras' cache), or set "
            f"model.backbone.weights to the path of a weights file") from err
    theirs = [layer for layer in reference.layers
              if not isinstance(layer, keras.layers.InputLayer)]
    if [len(layer.weights) for layer in theirs] != [len(layer.weights) for layer in base]:
        raise ValueError(f"{family}: the weights do not fit the backbone's layers")
    for ours, loaded in zip(base, theirs):
        ours.set_weights(loaded.get_weights())


# --- siamese ----------------------------------------------------------------------------

def siamese(hp: Mapping, input_shape: tuple, config: ModelConfig, seed: int,
            n_classes: int = 2) -> keras.Model:
    """The siamese network: the trunk family's encoder, shared by the baseline and the
    abnormal patch of a pair (input (2, H, W, 1)), the difference and both encodings
    concatenated, a dense head; Adam. The trunk keeps its training-only augmentation."""
    if len(input_shape) != 4 or input_shape[0] != 2:
        raise ValueError(f"siamese takes pairs of patches shaped (2, H, W, 1), got "
                         f"{input_shape}: set data.pairs")
    options = config.siamese
    single = build_model({**hp, "family": options.trunk}, input_shape[1:], config, seed,
                         n_classes)
    encoder = trunk_of(single)
    pair = keras.Input(input_shape, name="pair")
    baseline, abnormal = encoder(pair[:, 0]), encoder(pair[:, 1])
    x = layers.Concatenate(name=PAIR_HEAD[0])(
        [layers.Subtract(name="difference")([abnormal, baseline]), baseline, abnormal])
    x = layers.Dense(options.head_units, activation="relu", name=PAIR_HEAD[1])(x)
    x = layers.Dropout(options.dropout, name=PAIR_HEAD[2])(x)
    model = keras.Model(pair, output_layer(n_classes)(x), name="siamese")
    return compile_classifier(model, keras.optimizers.Adam(float(hp.get("learning_rate", 1e-3))),
                              n_classes)


def trunk_of(model: keras.Model) -> keras.Model:
    """Returns a built family's network without its output layer: patch -> features, the
    training-only augmentation first (named ENCODER; a nested network stays BODY, so
    explanations find its layers as in any family)."""
    names = [layer.name for layer in model.layers]
    if BODY not in names:  # the hypermodel: one flat model
        return keras.Model(model.input, model.get_layer("probability").input, name=ENCODER)
    body = model.get_layer(BODY)
    features = keras.Model(body.input, body.get_layer("probability").input, name=BODY)
    inputs = keras.Input(model.input.shape[1:])
    return keras.Model(inputs, features(model.get_layer(AUGMENTATION)(inputs)), name=ENCODER)


# --- shared pieces ----------------------------------------------------------------------

def _assemble(family: str, inputs, features, stack: AugmentationConfig, seed: int,
              optimizer: keras.optimizers.Optimizer, n_classes: int = 2,
              output_init="glorot_uniform") -> keras.Model:
    """Returns input -> augmentation -> body (network + output layer), compiled."""
    body = keras.Model(inputs, output_layer(n_classes, output_init)(features), name=BODY)
    model_input = keras.Input(inputs.shape[1:], name="patch")
    model = keras.Model(model_input, body(augmentation(stack, seed)(model_input)), name=family)
    return compile_classifier(model, optimizer, n_classes)


def _need_min_side(family: str, input_shape: tuple, side: int) -> None:
    if min(input_shape[:2]) < side:
        raise ValueError(f"{family} needs images of at least {side}x{side} pixels, got "
                         f"{input_shape[0]}x{input_shape[1]}")


# The registered builders (mammo_core/registry.py FAMILIES names each of them).
mass_calc_m0, mass_calc_m1, mass_calc_m2, mass_calc_m3, mass_calc_m4, mass_calc_m5 = (
    mass_calc(k) for k in range(len(MASS_CALC)))
vgg16 = backbone("vgg16")
inception_v3 = backbone("inception_v3")
