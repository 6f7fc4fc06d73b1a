"""Model families: each a pure function (hyperparameters, input shape, config) -> network,
compiled by `build_model` with the family's training recipe (mammo_core/recipe.py).

Every family keeps the contract the pipeline relies on, so any of them can be searched,
compared, ensembled, registered, served and explained alike:

- input: preprocessed patches (H, W, 1); output `probability`: one sigmoid unit for two
  classes, a softmax for more (hypermodel.output_layer);
- compiled metrics `auc` and `accuracy` (the same metric names in MLflow for every family);
- the training-only augmentation stack first (named AUGMENTATION), then the network as
  one nested model named BODY, so explanations take the body as it is (shared weights).

The published systems are built exactly as their documents (../shared/seeds/) print them;
tests/test_families.py pins each weight count against the document's model summary.

Families:
  hypermodel          the project's searched CNN (mammo_core.hypermodel)
  microcal_hypermodel document 000's searched CNN: three conv blocks, a 256/(i+1) head
  microcal_cnn        document 001's CNN: conv 32-64-128-128, Dense 256 -> 128 (568,449)
  mass_calc_m0 .. m5  document 002's six mass-vs-calcification variants (see MASS_CALC)
  mias_cnn            document 004's MIAS CNN: 128x128 input only (117,505)
  cbis_scratch        document 003's scratch CNN: conv 32-64-128-128 valid, Dense 512
                      (3,452,545 at 150x150)
  vgg16, inception_v3 document 003's transfer set-up: an ImageNet base behind a gray ->
                      RGB adapter, cut at a named block, frozen or fine-tuned, Flatten ->
                      Dense head (model.backbone)
  siamese             the project's pair network: a shared encoder (any family above
                      without its output, model.siamese.trunk), merged as
                      [abnormal - baseline, baseline, abnormal] -> dense -> dropout
  siamese_cbis        document 003's pair network: the cbis_scratch encoder (to its Dense
                      512) shared by both patches, concatenated (1024) -> Dropout 0.4 ->
                      Dense 512 (3,977,345)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import keras
from keras import layers

from mammo_core.config import AugmentationConfig, ModelConfig, SiameseConfig, TrainingConfig
from mammo_core.hypermodel import AUGMENTATION, augmentation, compile_classifier, output_layer
from mammo_core.recipe import Recipe, resolve
from mammo_core.registry import FAMILIES

BODY = "body"
ENCODER = "encoder"  # the pair families' shared trunk
MERGE = "merge"  # the pair families' join of the two encodings; the head follows it
FEATURES = "features"  # the backbones' last feature map: what Grad-CAM looks at
NO_AUGMENTATION = AugmentationConfig(flip=False, rotate90=False, contrast=0.0)


def family_of(hp: Mapping, config: ModelConfig) -> str:
    """Returns the family a configuration builds: `hp["family"]` if searched, else the config's."""
    return str(hp.get("family", config.family))


def build_model(hp: Mapping, input_shape: tuple[int, int, int], config: ModelConfig,
                seed: int = 0, n_classes: int = 2) -> keras.Model:
    """Returns the classifier of the configuration's family for `n_classes`, compiled with
    the optimizer of its recipe (published, overridden by `config.optimizer` and `hp`).

    Raises ValueError for an unknown family or an input the family cannot take.
    """
    family = family_of(hp, config)
    network = build_network(family, hp, input_shape, config, seed, n_classes)
    optimizer = resolve(family, hp, config.optimizer).make_optimizer()
    return compile_classifier(network, optimizer, n_classes)


def build_network(family: str, hp: Mapping, input_shape: tuple, config: ModelConfig,
                  seed: int = 0, n_classes: int = 2) -> keras.Model:
    """Returns the family's network, uncompiled."""
    return FAMILIES.load(family)(hp, tuple(input_shape), config, seed, n_classes)


def recipe_for(hp: Mapping, model: ModelConfig, training: TrainingConfig) -> Recipe:
    """Returns the recipe a configuration trains with: its family's published one, with
    the config's `model.optimizer` and `training` overrides, then the trial's `hp`."""
    return resolve(family_of(hp, model), hp, model.optimizer, training)


def family_of_model(model: keras.Model) -> str:
    """Returns the family a built (or loaded) model belongs to; each family names its model."""
    return model.name if model.name in FAMILIES else "hypermodel"


def count_params(model: keras.Model) -> int:
    """Returns the number of weights of the model, trainable or not (Keras' "Total params")."""
    return int(sum(int(w.numpy().size) for w in model.weights))


def count_frozen(model: keras.Model) -> int:
    """Returns the number of weights training leaves alone (Keras' "Non-trainable params")."""
    return int(sum(int(w.numpy().size) for w in model.non_trainable_weights))


# --- the fixed published CNNs -----------------------------------------------------------

def microcal_hypermodel(hp: Mapping, input_shape: tuple, config: ModelConfig, seed: int,
                        n_classes: int = 2) -> keras.Model:
    """Document 000's hypermodel: three blocks of (conv 3x3 same, GlorotNormal, ReLU,
    BatchNorm, max pool, dropout `rate`) with init, 2 init, 4 init filters; Flatten,
    Dropout(rate + 0.1), `depth` Dense layers of 256 / (i + 1) units; Adam 1e-3 with
    beta_2 0.9999 (its recipe). Its space: init 10/20/30, rate 0/0.05, depth 1/2/3.

    The schema does not order ReLU and BatchNorm nor set BatchNorm's momentum: ReLU
    first, and model.batchnorm_momentum (Keras' 0.99 leaves the moving statistics at
    their start on ~16 steps an epoch, see ModelConfig).
    """
    _need_min_side("microcal_hypermodel", input_shape, 8)
    init, depth, rate = int(hp["init"]), int(hp["depth"]), float(hp["rate"])
    inputs = keras.Input(input_shape)
    x = inputs
    for index in range(3):
        x = layers.Conv2D(init * 2 ** index, 3, padding="same", activation="relu",
                          kernel_initializer=keras.initializers.GlorotNormal(seed=seed + index),
                          name=f"conv_{index}")(x)
        x = layers.BatchNormalization(momentum=config.batchnorm_momentum)(x)
        x = layers.Dropout(rate)(layers.MaxPooling2D()(x))
    x = layers.Dropout(min(rate + 0.1, 0.9))(layers.Flatten()(x))
    for index in range(depth):
        x = layers.Dense(256 // (index + 1), activation="relu", name=f"dense_{index}")(x)
    return _assemble("microcal_hypermodel", inputs, x, config.augmentation, seed, n_classes)


def microcal_cnn(hp: Mapping, input_shape: tuple, config: ModelConfig, seed: int,
                 n_classes: int = 2) -> keras.Model:
    """Document 001's CNN, as its summary prints it (568,449 weights at 60x60): conv 3x3
    same with bias, 32-64-128-128 filters, a max pool after each; dropout after the 2nd
    and 3rd pools and after Flatten; Dense 256 -> 128 -> output.

    The summary gives neither activations nor dropout rates: ReLU and 0.25 (Keras'
    examples); its recipe is Keras' Adam 1e-3.
    """
    _need_min_side("microcal_cnn", input_shape, 16)
    inputs = keras.Input(input_shape)
    x = inputs
    for index, filters in enumerate((32, 64, 128, 128)):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv_{index}")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(0.25)(x) if index in (1, 2) else x
    x = layers.Dropout(0.25)(layers.Flatten()(x))
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dense(128, activation="relu")(x)
    return _assemble("microcal_cnn", inputs, x, config.augmentation, seed, n_classes)


@dataclass(frozen=True)
class MassCalcVariant:
    filters: tuple[int, ...]
    dense: int
    dropout: bool
    augment: bool
    l2: float


# Document 002 describes each model by what it adds to the previous one: M1 dropout, M2
# augmentation, M3 a 128-filter conv and Dense(48) (with RMSprop, decay 1e-3, batch 128
# and early stopping: its recipe), M4 a 256-filter conv, M5 L2 5e-5 on the conv kernels.
# It never prints M0: a conv 32 -> conv 64 CNN (3x3 same, ReLU, max pool after each,
# Dense 64), the smallest network M3's "added a 128-filter conv" fits; the dropout rates
# (0.25 after each pool, 0.5 after the dense layer) are Keras' example values.
MASS_CALC = (
    MassCalcVariant((32, 64), 64, False, False, 0.0),
    MassCalcVariant((32, 64), 64, True, False, 0.0),
    MassCalcVariant((32, 64), 64, True, True, 0.0),
    MassCalcVariant((32, 64, 128), 48, True, True, 0.0),
    MassCalcVariant((32, 64, 128, 256), 48, True, True, 0.0),
    MassCalcVariant((32, 64, 128, 256), 48, True, True, 5e-5),
)


def mass_calc(variant: int) -> Callable[..., keras.Model]:
    """Returns the builder of document 002's mass-vs-calcification model `variant` (0..5)."""
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
        stack = config.augmentation if spec.augment else NO_AUGMENTATION
        return _assemble(f"mass_calc_m{variant}", inputs, x, stack, seed, n_classes)
    return build


MIAS_SIZE = (128, 128)


def mias_cnn(hp: Mapping, input_shape: tuple, config: ModelConfig, seed: int,
             n_classes: int = 2) -> keras.Model:
    """Document 004's MIAS CNN, line by line (117,505 weights): 128x128 input only; conv
    32 -> conv 64 -> pool -> conv 64 -> pool (3x3 valid, ReLU) -> Dropout 0.25 -> Dense 64
    on every pixel -> Dropout 0.25 -> Flatten -> output; every kernel but the output's
    drawn from RandomNormal(0, 0.02). Recipe: Adam 1e-3, batch 128, early stopping on
    validation loss (patience 3, best weights kept)."""
    if tuple(input_shape[:2]) != MIAS_SIZE:
        raise ValueError(f"mias_cnn takes {MIAS_SIZE[0]}x{MIAS_SIZE[1]} images (the MIAS "
                         f"study's input), got {input_shape[0]}x{input_shape[1]}: set "
                         "data.image_size to [128, 128]")
    init = keras.initializers.RandomNormal(0.0, 0.02, seed=seed)
    inputs = keras.Input(input_shape)
    x = inputs
    for index, filters in enumerate((32, 64, 64)):
        x = layers.Conv2D(filters, 3, activation="relu", kernel_initializer=init,
                          name=f"conv_{index}")(x)
        x = layers.MaxPooling2D()(x) if index else x
    x = layers.Dropout(0.25)(x)
    x = layers.Dropout(0.25)(layers.Dense(64, activation="relu", kernel_initializer=init)(x))
    return _assemble("mias_cnn", inputs, layers.Flatten()(x), config.augmentation, seed,
                     n_classes)


def cbis_scratch(hp: Mapping, input_shape: tuple, config: ModelConfig, seed: int,
                 n_classes: int = 2) -> keras.Model:
    """Document 003's CNN from scratch (3,452,545 weights at 150x150): conv 3x3 valid
    with ReLU, 32-64-128-128 filters, a max pool after each, Flatten, Dense 512 ->
    output. Recipe: its SCRATCH_6, RMSprop 1e-3 for 35 epochs; augmentation (flip and
    90-degree turns) is model.augmentation."""
    _need_min_side("cbis_scratch", input_shape, 46)
    inputs = keras.Input(input_shape)
    x = inputs
    for index, filters in enumerate((32, 64, 128, 128)):
        x = layers.Conv2D(filters, 3, activation="relu", name=f"conv_{index}")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Dense(512, activation="relu", name="dense_512")(layers.Flatten()(x))
    return _assemble("cbis_scratch", inputs, x, config.augmentation, seed, n_classes)


# --- ImageNet backbones -----------------------------------------------------------------

@dataclass(frozen=True)
class Backbone:
    application: Callable[..., keras.Model]
    min_side: int  # keras.applications refuses smaller inputs
    # the layer ending each cut level, the whole base first: top, top+1, ... as document
    # 003 names them (each level removes one block of the Keras model)
    cuts: tuple[str, ...]
    weights_file: str  # the no-top ImageNet file Keras downloads into ~/.keras/models


BACKBONES = {
    "vgg16": Backbone(keras.applications.VGG16, 32,
                      tuple(f"block{k}_pool" for k in range(5, 0, -1)),
                      "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    # Keras builds mixed9-10 and mixed5-6 in one loop each: one block each, so the
    # report's "top+1" (3x3x1280 features, 10,674,848 base weights at 150x150) ends at
    # mixed8 and its "top+2" at mixed7.
    "inception_v3": Backbone(keras.applications.InceptionV3, 75,
                             ("mixed10", "mixed8", "mixed7", "mixed6", "mixed4", "mixed3",
                              "mixed2", "mixed1", "mixed0"),
                             "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
}


def backbone(family: str) -> Callable[..., keras.Model]:
    """Returns the builder of an ImageNet backbone family (document 003's transfer set-up)."""
    spec = BACKBONES[family]

    def build(hp: Mapping, input_shape: tuple, config: ModelConfig, seed: int,
              n_classes: int = 2) -> keras.Model:
        options = config.backbone
        cut = _cut_layer(family, str(hp.get("cut", options.cut)), spec.cuts)
        side = max(spec.min_side, *input_shape[:2])
        inputs = keras.Input(input_shape)
        x = _to_rgb(inputs, options.adapter)
        if tuple(input_shape[:2]) != (side, side):
            x = layers.Resizing(side, side, name="upsize")(x)
        trunk = spec.application(include_top=False, weights=None, input_tensor=x)
        ours = {"to_rgb", "upsize", inputs.name}
        base = [layer for layer in trunk.layers if layer.name not in ours
                and not isinstance(layer, keras.layers.InputLayer)]
        if options.weights:
            _load_backbone_weights(family, spec, options.weights, (side, side, 3), base)
        kept = base[:[layer.name for layer in base].index(cut) + 1]
        _set_trainable(kept, hp.get("trainable_layers", options.trainable_layers))
        x = layers.Identity(name=FEATURES)(trunk.get_layer(cut).output)
        x = (layers.Flatten() if options.pooling == "flatten"
             else layers.GlobalAveragePooling2D())(x)
        units = hp.get("head_units", options.head_units)
        for width in ((units,) if isinstance(units, (int, float)) else units):
            x = layers.Dense(int(width), activation="relu")(x)
            x = layers.Dropout(options.dropout)(x) if options.dropout else x
        return _assemble(family, inputs, x, config.augmentation, seed, n_classes)
    return build


def _to_rgb(inputs, adapter: str):
    """Returns the 3-channel input of a backbone: a learned 1x1 convolution (3 filters:
    6 weights) or the gray channel replicated (no weights)."""
    if adapter == "replicate":
        return layers.Concatenate(name="to_rgb")([inputs, inputs, inputs])
    return layers.Conv2D(3, 1, name="to_rgb")(inputs)


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
    weights there (Keras' own loader and checks; `imagenet` reads Keras' cache and
    downloads the file only when it is not there), and hands them over layer by layer:
    inside our model its layers sit behind the gray -> RGB adapter, which the file does
    not know. Raises ValueError with one line that says how to supply the file.
    """
    source = weights if weights == "imagenet" else str(Path(weights).expanduser())
    try:
        reference = spec.application(include_top=False, weights=source, input_shape=shape)
    except Exception as err:  # noqa: BLE001 — a failed download or an unreadable file
        raise ValueError(
            f"cannot load {family} weights '{weights}' ({type(err).__name__}: {err}). Offline? "
            f"Place {spec.weights_file} in ~/.keras/models/ (Keras' cache), or set "
            f"model.backbone.weights to the path of a weights file (null: random weights)"
        ) from err
    theirs = [layer for layer in reference.layers
              if not isinstance(layer, keras.layers.InputLayer)]
    if [len(layer.weights) for layer in theirs] != [len(layer.weights) for layer in base]:
        raise ValueError(f"{family}: the weights do not fit the backbone's layers")
    for ours, loaded in zip(base, theirs):
        ours.set_weights(loaded.get_weights())


# --- pairs of patches ---------------------------------------------------------------------

# document 003's pair network: its scratch CNN as the encoder, the two encodings
# concatenated, Dropout 0.4 before a Dense 512 head
SIAMESE_CBIS = SiameseConfig(trunk="cbis_scratch", merge="concat", head_units=512,
                             dropout=0.4, dropout_first=True)


def siamese(hp: Mapping, input_shape: tuple, config: ModelConfig, seed: int,
            n_classes: int = 2) -> keras.Model:
    """The project's pair network (model.siamese): the trunk family's encoder, shared by
    the baseline and the abnormal patch of a pair (input (2, H, W, 1)), the encodings
    merged, a dense head. The trunk keeps its training-only augmentation."""
    return _pair_network("siamese", config.siamese, hp, input_shape, config, seed, n_classes)


def siamese_cbis(hp: Mapping, input_shape: tuple, config: ModelConfig, seed: int,
                 n_classes: int = 2) -> keras.Model:
    """Document 003's Siamese network (3,977,345 weights at 150x150): the cbis_scratch
    network up to its Dense 512 encodes both patches (one shared encoder, 3,452,032),
    concatenated (1024) -> Dropout 0.4 -> Dense 512 -> output. Its best run (SIAMESE_5)
    augmented by rotation only: model.augmentation."""
    return _pair_network("siamese_cbis", SIAMESE_CBIS, hp, input_shape, config, seed,
                         n_classes)


def _pair_network(name: str, options: SiameseConfig, hp: Mapping, input_shape: tuple,
                  config: ModelConfig, seed: int, n_classes: int) -> keras.Model:
    if len(input_shape) != 4 or input_shape[0] != 2:
        raise ValueError(f"{name} takes pairs of patches shaped (2, H, W, 1), got "
                         f"{input_shape}: set data.pairs")
    single = build_network(options.trunk, {**hp, "family": options.trunk}, input_shape[1:],
                           config, seed, n_classes)
    encoder = trunk_of(single)
    pair = keras.Input(input_shape, name="pair")
    baseline, abnormal = encoder(pair[:, 0]), encoder(pair[:, 1])
    x = merge_pair(options.merge, baseline, abnormal)
    dense = layers.Dense(options.head_units, activation="relu", name="pair_head")
    dropout = layers.Dropout(options.dropout, name="pair_dropout")
    x = dense(dropout(x)) if options.dropout_first else dropout(dense(x))
    return keras.Model(pair, output_layer(n_classes)(x), name=name)


def merge_pair(merge: str, baseline, abnormal, difference: layers.Layer | None = None,
               join: layers.Layer | None = None):
    """Returns the two encodings merged: concat [baseline, abnormal] or difference
    [abnormal - baseline, baseline, abnormal] (the layers given are reused, else made)."""
    join = join or layers.Concatenate(name=MERGE)
    if merge == "concat":
        return join([baseline, abnormal])
    difference = difference or layers.Subtract(name="difference")
    return join([difference([abnormal, baseline]), baseline, abnormal])


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
              n_classes: int = 2) -> keras.Model:
    """Returns input -> augmentation -> body (network + output layer), uncompiled."""
    body = keras.Model(inputs, output_layer(n_classes)(features), name=BODY)
    model_input = keras.Input(inputs.shape[1:], name="patch")
    return keras.Model(model_input, body(augmentation(stack, seed)(model_input)), name=family)


def _need_min_side(family: str, input_shape: tuple, side: int) -> None:
    if min(input_shape[:2]) < side:
        raise ValueError(f"{family} needs images of at least {side}x{side} pixels, got "
                         f"{input_shape[0]}x{input_shape[1]}")


# The registered builders (mammo_core/registry.py FAMILIES names each of them).
mass_calc_m0, mass_calc_m1, mass_calc_m2, mass_calc_m3, mass_calc_m4, mass_calc_m5 = (
    mass_calc(k) for k in range(len(MASS_CALC)))
vgg16 = backbone("vgg16")
inception_v3 = backbone("inception_v3")
