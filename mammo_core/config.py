"""Experiment configuration: YAML files loaded into typed, frozen pydantic models.

Every key a YAML file may hold is a field here, with its type and its range. Unknown keys,
values of the wrong type, NaN or infinity, numbers outside their range and fractions the
splitter cannot honour exactly are rejected with a ``ConfigError`` that names the dotted
key path and what is allowed, so a typo such as ``preprocessing.wavelet.famly`` fails
loudly instead of being ignored.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional, Union

import pywt
import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field,
                      StrictBool, StrictInt, ValidationError, field_validator,
                      model_validator)

from mammo_core.balance import METHODS as BALANCE_METHODS
from mammo_core.errors import ConfigError
from mammo_core.recipe import MONITORS, OPTIMIZERS
from mammo_core.registry import ENSEMBLE_METHODS, FAMILIES, LAYOUTS, PAIR_FAMILIES


def _number(value: Any) -> Any:
    """YAML reads 1e-3 (no dot) as a string; true/false are never numbers."""
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
    return value


def _text(value: Any) -> Any:
    """A YAML key or value such as 0 or 2024 is text where text is expected."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _one_over_n(value: float) -> float:
    """Grouped splits cut 1/n of the groups off (n folds): other fractions are refused
    rather than silently rounded."""
    n = round(1 / value)
    if n < 2 or abs(value - 1 / n) > 1e-3:
        allowed = ", ".join(f"{1 / k:.4g}" for k in range(2, 11))
        raise ValueError(f"must be 1/n for a whole n >= 2 ({allowed}, ...), got {value}: a "
                         "grouped split takes one part of n")
    return value


Int = StrictInt
Float = Annotated[float, BeforeValidator(_number)]
Text = Annotated[str, BeforeValidator(_text)]
Name = Annotated[Text, Field(min_length=1)]
Bool = StrictBool
Count = Annotated[Int, Field(ge=1)]
Seed = Annotated[Int, Field(ge=0)]
Rate = Annotated[Float, Field(ge=0, lt=1)]  # dropout, momentum
Probability = Annotated[Float, Field(gt=0, lt=1)]
SplitFraction = Annotated[Float, Field(gt=0, lt=1), AfterValidator(_one_over_n)]
# a hyperparameter value or a searched choice: integers stay integers, numbers in any YAML
# spelling become floats, anything else stays text
Scalar = Annotated[Union[Int, Float, Text], Field(union_mode="left_to_right")]


class Section(BaseModel):
    """A config section: immutable, no unknown keys, no NaN or infinity."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def replace(self, **changes: Any) -> Any:
        """Returns a copy with `changes` (field -> value), checked like a loaded file."""
        return type(self).model_validate(dict(self) | changes)


class DataConfig(Section):
    """Where the images are, how the collection is laid out, how to read labels and groups.

    layout: a name of mammo_core/registry.py LAYOUTS: `folders` (class folders, e.g.
    microcal's {Train,Test}/{0,1} or CBIS' {mass,calc}_{train,test}), `cbis_npy` (CBIS-DDSM
    baseline/abnormal pairs in .npy arrays), `cbis_dicom` (CBIS-DDSM as the archive
    distributes it: DICOM files plus the case-description CSVs) or `mias` (mini-MIAS .pgm
    files with Info.txt).
    """

    root: Optional[Text] = None  # None: MAMMO_DATA_DIR, then the default locations
    # the folder name looked for beside the project (../shared/data/<collection>, data/<...>)
    collection: Name = "microcal"
    layout: Text = "folders"
    image_size: tuple[Count, Count] = (60, 60)
    # images of another size are resampled to image_size (bilinear) instead of refused
    resize: Bool = False
    # cbis_npy / cbis_dicom / mias: source label -> task label ("0".."4" for CBIS NumPy;
    # abnormality types mass, calcification or pathologies BENIGN, BENIGN_WITHOUT_CALLBACK,
    # MALIGNANT for CBIS DICOM; NORM, CALC, CIRC, SPIC, MISC, ARCH, ASYM for MIAS); images
    # of labels not listed are left out
    label_map: Optional[dict[Text, Int]] = None
    # cbis_npy: partition -> [images.npy, labels.npy]; null: every *_images.npy with the
    # *_labels.npy of the same prefix
    npy_files: Optional[dict[Text, tuple[Text, Text]]] = None
    # mias: whole (each mammogram downscaled) or roi (patches around each abnormality's
    # centre, and from normal tissue of normal images)
    mias_task: Literal["whole", "roi"] = "whole"
    mias_info_file: Name = "Info.txt"
    # cbis_dicom: crop (the archive's cropped lesions), roi (patches cut from the full
    # mammogram around each ROI mask, with roi_margin context) or whole (mammograms
    # downscaled to image_size right after decoding)
    cbis_task: Literal["crop", "roi", "whole"] = "crop"
    # cbis_dicom roi: context added on each side of the mask's box, as a share of its side
    roi_margin: Annotated[Float, Field(ge=0, le=5)] = 0.25
    # cbis_dicom: the case-description CSVs; null: every *case_description*.csv under root
    case_descriptions: Optional[tuple[Text, ...]] = None
    # cbis_dicom: a CSV row without its files, or a file no row names, is reported; the run
    # goes on only when this is true (the rows left out are counted in the summary)
    allow_missing: Bool = False
    # DICOM: apply the rescale slope/intercept and the VOI LUT or window when a file has
    # them (false: the stored values, scaled by BitsStored)
    dicom_voi: Bool = False
    # cbis_npy: one input per patient, the (baseline, abnormal) pair of patches, labelled
    # by the abnormal patch's task label (the siamese family takes pairs)
    pairs: Bool = False
    roi_patch_size: Annotated[Int, Field(ge=8)] = 128  # source pixels per side (mias roi)
    normal_patches_per_image: Annotated[Int, Field(ge=0)] = 2  # mias roi: per normal mammogram
    # class-folder name -> integer label; the folder names are also the class names
    classes: dict[Text, Int] = {"0": 0, "1": 1}
    class_names: dict[Int, Text] = {0: "normal", 1: "microcalcification"}
    extensions: tuple[Text, ...] = (".png", ".pgm", ".dcm")  # folders layout
    # Regex matched at the start of each file name; named groups `case` and `roi`.
    # None gives every image its own case and ROI.
    filename_pattern: Optional[Text] = r"(?P<roi>(?P<case>\d{4})[^.]*)\.pgm_\d+"
    # null: the collection has no public download (a missing folder is an error)
    download_url: Optional[Text] = "https://www.pi.infn.it/~boccali/DL_class_data.tar.gz"
    # SHA-256 the downloaded tarball must have before anything is extracted; null refuses
    # the download and prints the digest it got, to be checked and pinned here.
    download_sha256: Optional[Text] = None
    download_max_bytes: Count = 512 * 2**20  # a larger download is stopped while it streams
    # folder inside the tarball that holds the {Train,Test}/{0,1} tree
    archive_subdir: Text = "IMAGES/Mammography_micro"

    @field_validator("layout")
    @classmethod
    def _known_layout(cls, layout: str) -> str:
        if layout not in LAYOUTS:
            raise ValueError(f"must be one of {list(LAYOUTS)}, got {layout!r}")
        return layout

    @field_validator("filename_pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                groups = re.compile(pattern).groupindex
            except re.error as err:
                raise ValueError(f"not a regular expression: {err}") from None
            if not {"case", "roi"} <= set(groups):
                raise ValueError("needs the named groups (?P<case>...) and (?P<roi>...)")
        return pattern

    @model_validator(mode="after")
    def _labels(self) -> DataConfig:
        key = "label_map" if self.layout != "folders" else "classes"
        labels = self.label_map if self.layout != "folders" else self.classes
        if labels is None and self.layout in ("cbis_npy", "cbis_dicom"):
            raise ValueError(f"'data.label_map' is required for the {self.layout} layout "
                             "(source labels -> task labels)")
        if labels is None:
            return self
        values = sorted(set(labels.values()))
        if len(values) < 2:
            raise ValueError(f"'data.{key}' must map to at least two distinct labels")
        if values != list(range(len(values))):
            raise ValueError(f"'data.{key}' values must be the task labels 0..{len(values) - 1}, "
                             f"each used; got {values}")
        # the reader's own list of the labels its collection uses (folders: any name)
        known = (None if self.layout == "folders"
                 else getattr(LAYOUTS.module(self.layout), "SOURCE_LABEL_NAMES", None))
        unknown = sorted(set(labels) - set(known)) if known else []
        if unknown:
            raise ValueError(f"'data.{key}' names {unknown}, not a {self.layout} source label "
                             f"(known: {', '.join(known)}): a typo would drop a class")
        check = getattr(LAYOUTS.module(self.layout), "check_label_map", None)
        if check is not None:
            check(labels)  # the reader's own rule (e.g. one vocabulary per map)
        return self

    @property
    def n_classes(self) -> int:
        """Returns how many labels the task has (2: binary, one sigmoid output)."""
        labels = self.classes if self.layout == "folders" else self.label_map
        return len(set(labels.values())) if labels else 2

    @property
    def label_names(self) -> list[str]:
        """Returns the task's class names in label order (0 .. n_classes - 1)."""
        return [self.class_names.get(k, str(k)) for k in range(self.n_classes)]

    @property
    def resizes(self) -> bool:
        """Whether image files of another size are resampled to `image_size` (by the
        loader, `predict`, `explain` and Serve); whole MIAS mammograms and every CBIS
        DICOM image (crops of every size, full fields) always are."""
        return (self.resize or (self.layout == "mias" and self.mias_task == "whole")
                or self.layout == "cbis_dicom")


class WaveletConfig(Section):
    enabled: Bool = True
    family: Name = "sym3"
    level: Annotated[Int, Field(ge=1, le=8)] = 3
    # details kept only where |c| > k * sigma of their sub-band
    threshold_k: Annotated[Float, Field(ge=0, le=100)] = 1.5
    drop_approximation: Bool = True  # removes the smooth tissue background
    drop_detail_levels: tuple[Count, ...] = (1,)  # level 1 is mostly sensor noise

    @field_validator("family")
    @classmethod
    def _known_wavelet(cls, family: str) -> str:
        if family not in pywt.wavelist(kind="discrete"):
            raise ValueError(f"not a discrete PyWavelets family, got {family!r} "
                             "(pywt.wavelist(kind='discrete') lists them)")
        return family

    @model_validator(mode="after")
    def _levels(self) -> WaveletConfig:
        if any(level > self.level for level in self.drop_detail_levels):
            raise ValueError("drop_detail_levels must lie in 1..level")
        return self


class ClaheConfig(Section):
    enabled: Bool = False
    clip_limit: Annotated[Float, Field(gt=0, le=1)] = 0.01
    kernel_size: Annotated[Int, Field(ge=2)] = 8


class PreprocessingConfig(Section):
    wavelet: WaveletConfig = WaveletConfig()
    clahe: ClaheConfig = ClaheConfig()
    # per-patch standardisation, for insensitivity to a scanner's gain and offset: zero
    # mean and unit std before the wavelet filter (on intensities) or after it (on its
    # output), or robust (before the filter: median and MAD, which a few bright
    # calcifications barely move), or noise (before the filter: minus the median, divided
    # by the patch's own noise level, which a gain scales but tissue and class do not
    # move); none keeps the absolute contrast (docs/benchmarks.md)
    standardize: Literal["none", "before", "after", "robust", "noise"] = "none"
    # fixed contrast enhancement, every image (train and inference): its deviation from
    # its own mean times this factor, no clipping (tf.image.adjust_contrast; the CBIS
    # report's 1.5 and 2); 1 leaves images as they are
    contrast_factor: Annotated[Float, Field(gt=0, le=10)] = 1.0


class AugmentationConfig(Section):
    flip: Bool = True
    rotate90: Bool = True
    # max relative contrast change; 0 switches it off. uniform: factors in [1 - contrast,
    # 1 + contrast] (so below 1); log_uniform: factors in [1 / (1 + contrast), 1 +
    # contrast], uniform in log scale, so a doubling of the contrast is as likely as a
    # halving (a scanner's gain multiplies)
    contrast: Annotated[Float, Field(ge=0, le=10)] = 0.1
    contrast_scale: Literal["uniform", "log_uniform"] = "uniform"
    # rotation by a random multiple of this many degrees (bilinear, corners filled with 0):
    # the MIAS study's 2-degree steps; 0 switches it off
    rotate_degrees: Annotated[Float, Field(ge=0, le=180)] = 0.0

    @model_validator(mode="after")
    def _positive_factors(self) -> AugmentationConfig:
        if self.contrast_scale == "uniform" and self.contrast >= 1:
            raise ValueError("contrast must be below 1 with contrast_scale uniform (a "
                             "factor 1 - contrast <= 0 inverts or blanks a patch); use "
                             "log_uniform for larger ranges")
        return self


class SiameseConfig(Section):
    """The siamese family: one shared encoder over a (baseline, abnormal) pair of patches."""

    trunk: Text = "hypermodel"  # the family whose network (without its output) encodes a patch
    # how the two encodings meet: difference = [abnormal - baseline, baseline, abnormal],
    # concat = [baseline, abnormal] (document 003)
    merge: Literal["difference", "concat"] = "difference"
    head_units: Count = 32  # the dense layer over the merged encodings
    dropout: Rate = 0.3
    dropout_first: Bool = False  # dropout before the dense layer (003) instead of after


class BackboneConfig(Section):
    """The ImageNet families (vgg16, inception_v3): weights, where to cut, what to train.

    The defaults are the CBIS report's set-up (document 003): ImageNet weights, frozen,
    a learned 1x1 convolution from gray to RGB, Flatten -> Dense 512 -> output.
    """

    # imagenet (Keras' file in ~/.keras/models, downloaded if missing), a local weights
    # file, or null (random initialisation: then train the backbone too)
    weights: Optional[Text] = "imagenet"
    # the report's cut levels: top = the whole convolutional base, top+k drops its last k
    # blocks (vgg16: block5, block4, ...; inception_v3: mixed9-10, mixed8, mixed7, ...)
    cut: Annotated[Text, Field(pattern=r"^top(\+\d+)?$")] = "top"
    # backbone layers fine-tuned, counted down from the cut: null = all, 0 = frozen
    trainable_layers: Optional[Annotated[Int, Field(ge=0)]] = 0
    # gray -> RGB: conv1x1 (3 learned 1x1 filters, the report's choice) or replicate (the
    # gray channel copied three times, as the papers it cites do)
    adapter: Literal["conv1x1", "replicate"] = "conv1x1"
    # how the head sees the feature map: flatten (the report) or avg (global average)
    pooling: Literal["flatten", "avg"] = "flatten"
    # dense layers between the features and the output: 512 (the report), [512, 256]
    # (its InceptionV3 on benign vs malignant)
    head_units: Union[Count, tuple[Count, ...]] = 512
    dropout: Rate = 0.0  # after each dense layer of the head

    @property
    def head_layers(self) -> tuple[int, ...]:
        """Returns the head's dense layer sizes."""
        return (self.head_units,) if isinstance(self.head_units, int) else self.head_units


class OptimizerConfig(Section):
    """Overrides of the family's published optimizer (mammo_core/recipe.py); null keeps
    the family's value. A searched `learning_rate` or `optimizer` overrides both."""

    name: Optional[Literal[OPTIMIZERS]] = None
    learning_rate: Optional[Annotated[Float, Field(gt=0, le=10)]] = None
    # Keras 2's inverse-time decay: step size learning_rate / (1 + decay * iteration)
    decay: Optional[Annotated[Float, Field(ge=0)]] = None
    beta_2: Optional[Probability] = None  # adam
    momentum: Optional[Rate] = None  # sgd


class ModelConfig(Section):
    """Fixed architecture choices; the searched ones live in `hyperparameters`.

    `family` picks the architecture (mammo_core/registry.py FAMILIES); all but
    `hypermodel` are fixed published designs, and the conv_blocks ... pooling fields below
    shape only the hypermodel.
    """

    family: Text = "hypermodel"
    optimizer: OptimizerConfig = OptimizerConfig()
    backbone: BackboneConfig = BackboneConfig()
    siamese: SiameseConfig = SiameseConfig()

    conv_blocks: Annotated[Int, Field(ge=1, le=8)] = 3
    kernel_size: Annotated[Int, Field(ge=1, le=15)] = 3
    dense_units: Count = 64  # first dense layer; each further layer halves it
    pooling: Literal["flatten", "avg", "max"] = "flatten"  # how the head sees the maps
    # Keras' default 0.99 needs hundreds of steps for the moving statistics to settle; with
    # ~16 steps per epoch and the small wavelet output they stay at their initial values
    # and every validation prediction collapses to one value (AUC 0.5). 0.9 settles fast.
    batchnorm_momentum: Rate = 0.9
    augmentation: AugmentationConfig = AugmentationConfig()

    @model_validator(mode="after")
    def _known_families(self) -> ModelConfig:
        if self.family not in FAMILIES:
            raise ValueError(f"'model.family' must be one of {list(FAMILIES)}, "
                             f"got {self.family!r}")
        if self.siamese.trunk not in FAMILIES or self.siamese.trunk in PAIR_FAMILIES:
            raise ValueError(f"'model.siamese.trunk' must be one of "
                             f"{[f for f in FAMILIES if f not in PAIR_FAMILIES]}, got "
                             f"{self.siamese.trunk!r}")
        return self


FINITE = ("choice", "grid")  # search dimensions given by their values


class ParamSpace(Section):
    """One searched hyperparameter: a finite `choice` (sampled), a `grid` (every value
    tried, in equal shares of the trials; random searcher only) or a continuous range."""

    type: Literal["choice", "grid", "uniform", "loguniform"]
    values: Optional[tuple[Scalar, ...]] = None
    low: Optional[Float] = None
    high: Optional[Float] = None

    @model_validator(mode="after")
    def _shape(self) -> ParamSpace:
        if self.type in FINITE:
            if not self.values:
                raise ValueError(f"a {self.type} needs at least one value in 'values'")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"needs low < high for a {self.type} range")
        elif self.type == "loguniform" and self.low <= 0:
            raise ValueError("a loguniform range needs low > 0")
        return self

    def corners(self) -> tuple[float, ...]:
        """Returns the extreme values of this dimension (used to smoke-test the space)."""
        if self.type in FINITE:
            return (min(self.values), max(self.values))
        return (self.low, self.high)


class SplitConfig(Section):
    group_by: Literal["case", "roi", "none"] = "case"
    test_fraction: SplitFraction = 0.2
    val_fraction: SplitFraction = 0.2  # of the part that remains after the test part
    seed: Seed = 0
    # grouped: outer test folds drawn by `group_by` (the project's honest default);
    # published: the collection's own test partition is every expert's test set, the
    # hold-out and validation parts come from its training partition (mammo_core/folds.py)
    protocol: Literal["grouped", "published"] = "grouped"
    # published: the partitions that form the test side (null: every partition whose name
    # holds "test", e.g. microcal's Test, CBIS' mass_test / calc_test, the NumPy test files)
    test_partitions: Optional[tuple[Name, ...]] = None
    # published, for a collection stored without partitions (the shared microcal folders):
    # an image-level random test split of this fraction, stratified by label, as the
    # publications drew theirs (document 001: 161 of 797 images)
    published_test_fraction: Optional[Probability] = None


class CrossValidationConfig(Section):
    """The fold plan: an ensemble hold-out first, then outer folds over the rest.

    Grouping key and seed come from `split`, so `train` and the search agree.
    """

    n_folds: Annotated[Int, Field(ge=2, le=20)] = 5
    holdout_fraction: SplitFraction = 0.2  # cases no expert ever trains on (ensemble weights)
    inner_val_fraction: SplitFraction = 0.25  # of each fold's development part, for selection


class SearchConfig(Section):
    """The Ray Tune budget per outer fold."""

    searcher: Literal["optuna", "hyperopt", "random"] = "optuna"
    trials_per_fold: Count = 12
    max_epochs: Count = 40
    grace_period: Count = 8  # ASHA never stops a trial earlier: validation AUC is noisy
    reduction_factor: Annotated[Int, Field(ge=2)] = 3
    max_concurrent_trials: Count = 2  # one trial per CPU core
    max_failures: Annotated[Int, Field(ge=0)] = 2  # retries of a trial whose worker died
    seed: Seed = 0
    # one worker per core trains trial after trial: no process start, no TensorFlow import
    # (benchmarks/search_profile.py: trial start-up 63 -> 11 core-seconds per fold)
    reuse_actors: Bool = True

    @model_validator(mode="after")
    def _grace_within_budget(self) -> SearchConfig:
        if self.grace_period > self.max_epochs:
            raise ValueError("'search.grace_period' must not exceed 'search.max_epochs'")
        return self


class TrainingConfig(Section):
    """The training loop. epochs, batch_size and the early-stopping keys override the
    family's published recipe (mammo_core/recipe.py); null keeps it."""

    epochs: Optional[Count] = None  # a single fit (`train`); searches: search.max_epochs
    batch_size: Optional[Annotated[Int, Field(ge=1, le=65536)]] = None
    # false: no early stopping; null: the recipe's rule (with the two keys below if set)
    early_stopping: Optional[Bool] = None
    early_stopping_patience: Optional[Count] = None
    # what early stopping watches: AUC (or loss), never accuracy (see docs)
    monitor: Optional[Literal[MONITORS]] = None
    seed: Seed = 0
    threshold: Probability = 0.5
    # imbalanced classes, on the training part only (never validation or test):
    # class_weight (loss weights), oversample (repeat minority images), undersample
    class_balance: Literal[BALANCE_METHODS] = "none"


class TrackingConfig(Section):
    experiment_name: Name = "mammo-microcal"
    registered_model_name: Name = "mammo-microcal"


class RegistryConfig(Section):
    """How the registry step combines the fold experts and picks the decision threshold."""

    # fixed: `fixed_threshold`; youden: max sensitivity + specificity - 1; sensitivity: the
    # highest threshold whose hold-out sensitivity reaches `target_sensitivity`.
    threshold: Literal["fixed", "youden", "sensitivity"] = "youden"
    fixed_threshold: Probability = 0.5
    target_sensitivity: Annotated[Float, Field(gt=0, le=1)] = 0.9
    # grouped splits of the hold-out for honest ensemble estimates
    cross_fit_folds: Annotated[Int, Field(ge=2, le=20)] = 5
    # which ensemble is registered: auto = the method with the best cross-fitted hold-out
    # AUC (ties: the simpler one, average before learned before best_single)
    method: Literal[("auto", *ENSEMBLE_METHODS)] = "auto"
    # binary tasks: Platt scaling of the combined probability, fitted with the weights
    calibration: Literal["none", "platt"] = "platt"
    champion_alias: Name = "champion"
    challenger_alias: Name = "challenger"


class ExplanationsConfig(Section):
    """Grad-CAM and SHAP maps: what the register step stores and its runs show."""

    background_size: Count = 50  # training patches per expert stored for SHAP's expectation
    partition_max_evals: Count = 500  # model evaluations per patch of the model-agnostic SHAP
    patches_per_class: Count = 3  # random patches of each class in the logged figures
    # misclassified patches in the logged figures, worst first
    max_misclassified: Annotated[Int, Field(ge=0)] = 6
    seed: Seed = 0


REQUIRED_HYPERPARAMETERS = ("init", "rate", "depth", "learning_rate")
# what each searched family's builder reads from the hyperparameters (the others have
# fixed published designs)
FAMILY_HYPERPARAMETERS = {"hypermodel": REQUIRED_HYPERPARAMETERS,
                          "microcal_hypermodel": ("init", "rate", "depth")}
# searched beside them: the family, the recipe's optimizer and batch size, and the
# backbone's choices (override model.optimizer, training and model.backbone)
SEARCHABLE = (*REQUIRED_HYPERPARAMETERS, "family", "optimizer", "batch_size", "cut",
              "trainable_layers", "head_units")


class Document(Section):
    """A whole YAML file: its resolved form and a hash of it."""

    def to_dict(self) -> dict[str, Any]:
        """Returns the resolved configuration as plain YAML-friendly data."""
        return plain(self.model_dump())

    def fingerprint(self) -> str:
        """Returns a short hash of the resolved configuration (identifies a setup)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


class Experiment(Document):
    name: Name
    data: DataConfig = DataConfig()
    preprocessing: PreprocessingConfig = PreprocessingConfig()
    model: ModelConfig = ModelConfig()
    hyperparameters: dict[Text, Scalar] = {}
    search_space: dict[Text, ParamSpace] = {}
    split: SplitConfig = SplitConfig()
    cross_validation: CrossValidationConfig = CrossValidationConfig()
    search: SearchConfig = SearchConfig()
    training: TrainingConfig = TrainingConfig()
    tracking: TrackingConfig = TrackingConfig()
    registry: RegistryConfig = RegistryConfig()
    explanations: ExplanationsConfig = ExplanationsConfig()

    @field_validator("search_space")
    @classmethod
    def _searchable(cls, space: dict[str, ParamSpace]) -> dict[str, ParamSpace]:
        for name, dimension in space.items():
            if name not in SEARCHABLE:
                raise ValueError(f"unknown hyperparameter 'search_space.{name}' "
                                 f"(searchable: {', '.join(SEARCHABLE)})")
            unknown = [v for v in (dimension.values or ()) if v not in FAMILIES]
            if name == "family" and (dimension.type not in FINITE or unknown):
                raise ValueError(f"'search_space.family' must be a choice of "
                                 f"{list(FAMILIES)}, got {unknown or dimension.type}")
        return space

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        families = self.searched_families()
        if self.data.pairs and not families <= set(PAIR_FAMILIES):
            raise ValueError("'data.pairs' feeds (baseline, abnormal) pairs: 'model.family' "
                             f"must be one of {list(PAIR_FAMILIES)} (and only those searched)")
        if families & set(PAIR_FAMILIES) and not self.data.pairs:
            raise ValueError("the siamese family takes pairs: set 'data.pairs: true' "
                             "(cbis_npy layout)")
        if self.data.pairs and self.data.layout != "cbis_npy":
            raise ValueError("'data.pairs' needs the cbis_npy layout (baseline/abnormal pairs)")
        trunks = families | ({self.model.siamese.trunk} if "siamese" in families else set())
        needed = {k for family in trunks for k in FAMILY_HYPERPARAMETERS.get(family, ())}
        missing = [k for k in REQUIRED_HYPERPARAMETERS if k in needed
                   and k not in self.hyperparameters]
        if missing:  # the other families have fixed designs
            raise ValueError(f"'hyperparameters' is missing {missing}")
        searched = self.search_space.get("optimizer")
        if searched and (searched.type not in FINITE
                         or any(v not in OPTIMIZERS for v in searched.values)):
            raise ValueError(f"'search_space.optimizer' must be a choice of {list(OPTIMIZERS)}")
        return self

    @model_validator(mode="after")
    def _grid_fits_the_budget(self) -> Experiment:
        size = self.grid_size()
        if size > 1 and self.search.searcher != "random":
            raise ValueError("a 'grid' search dimension needs 'search.searcher: random' (Optuna "
                             "and HyperOpt sample their own points)")
        if self.search.trials_per_fold % size:
            raise ValueError(f"'search.trials_per_fold' ({self.search.trials_per_fold}) must be "
                             f"a multiple of the grid's {size} points, so each is tried "
                             "equally often")
        return self

    def grid_size(self) -> int:
        """Returns how many points the `grid` dimensions span together (1: none)."""
        return math.prod(len(d.values) for d in self.search_space.values() if d.type == "grid")

    def searched_families(self) -> set[str]:
        """Returns the families the search may build (the searched choice, else the model's)."""
        family = self.search_space.get("family")
        return set(family.values) if family else {self.model.family}


class WaveletFeaturesConfig(Section):
    """Which 2-D wavelet coefficients represent a patch for the classic classifiers."""

    family: Name = "db5"
    level: Annotated[Int, Field(ge=1, le=8)] = 4
    keep_levels: tuple[Count, ...] = (2, 3, 4)  # detail levels kept; 1 is the finest
    keep_approximation: Bool = False
    # |c| instead of c: a calcification is a large coefficient of either sign, which a
    # linear model of the signed values cannot use
    magnitude: Bool = False
    standardize: Bool = True  # a scaler fitted on each training fold only

    @model_validator(mode="after")
    def _kept(self) -> WaveletFeaturesConfig:
        if any(level > self.level for level in self.keep_levels):
            raise ValueError("'features' needs keep_levels within 1..level")
        if not self.keep_levels and not self.keep_approximation:
            raise ValueError("'features' keeps no coefficients: set keep_levels or "
                             "keep_approximation")
        return self


# One classifier's search grid: parameter -> values tried (the Cartesian product is searched).
# A list value (e.g. MLP layer sizes) is one tuple-valued choice; null is None.
GridValue = Annotated[Union[Int, Float, Text, tuple[Int, ...], None],
                      Field(union_mode="left_to_right")]
ParamGrid = dict[str, tuple[GridValue, ...]]


class BaselinesSearchConfig(Section):
    seed: Seed = 0
    max_concurrent: Count = 2  # Ray tasks at once; one (classifier, fold) fit per CPU


class BaselinesExperiment(Document):
    """The wavelet-coefficient study: classic classifiers on the CNN search's folds."""

    name: Name
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()  # used only when no search's fold plan is read
    cross_validation: CrossValidationConfig = CrossValidationConfig()
    features: WaveletFeaturesConfig = WaveletFeaturesConfig()
    classifiers: dict[Text, dict[Text, tuple[GridValue, ...]]] = {}
    search: BaselinesSearchConfig = BaselinesSearchConfig()
    tracking: TrackingConfig = TrackingConfig()
    threshold: Probability = 0.5  # for accuracy, sensitivity, specificity, F1, F2

    @field_validator("classifiers")
    @classmethod
    def _known_classifiers(cls, grids: dict[str, ParamGrid]) -> dict[str, ParamGrid]:
        # imported here, not at the top: scikit-learn is needed only for a baselines config
        from mammo_core.classifiers import validate_grids

        if not grids:
            raise ValueError("'classifiers' must name at least one classifier")
        validate_grids(grids)
        return grids


def load_experiment(path: str | Path) -> Experiment:
    """Returns the Experiment described by the YAML file at `path`.

    Raises ConfigError naming the key for unknown keys, wrong types or bad values.
    """
    return experiment_from_dict(_read_yaml(path))


def experiment_from_dict(raw: dict[str, Any]) -> Experiment:
    """Returns the Experiment for already-parsed data (same checks as load_experiment)."""
    return _validated(Experiment, raw)


def load_baselines(path: str | Path) -> BaselinesExperiment:
    """Returns the BaselinesExperiment described by the YAML file at `path`.

    Raises ConfigError naming the key for unknown keys, wrong types or bad values;
    classifier names and their grid parameters are checked by `mammo_core.classifiers`.
    """
    return _validated(BaselinesExperiment, _read_yaml(path))


def flat_params(experiment: Document) -> dict[str, str]:
    """Returns the config flattened to dotted keys, for MLflow params."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            out[prefix] = str(value)

    walk("", experiment.to_dict())
    return out


def plain(value: Any, string_keys: bool = False) -> Any:
    """Returns `value` as plain YAML/JSON data: mappings as dicts (keys made strings with
    `string_keys`), sequences as lists, NumPy scalars as Python numbers."""
    if isinstance(value, Mapping):
        return {(str(k) if string_keys else k): plain(v, string_keys) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, string_keys) for v in value]
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # a NumPy scalar
        return value.item()
    return value


def _read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def _validated(model: type[Document], raw: Any) -> Any:
    """Returns `model` validated from `raw`; raises ConfigError for the first problem."""
    if not isinstance(raw, dict):
        raise ConfigError(f"experiment: expected a mapping, got {raw!r}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_message(err.errors()[0], model, raw)) from None


def _message(error: dict, model: type[BaseModel], raw: dict) -> str:
    """Returns one pydantic error as a sentence that names the dotted key."""
    path = _path_in(raw, error["loc"])
    where = ".".join(str(p) for p in path)
    text = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        allowed = _fields_at(model, path[:-1])
        return f"unknown config key '{where}'" + (
            f" (allowed here: {', '.join(sorted(allowed))})" if allowed else "")
    if error["type"] == "missing":
        missing = error["loc"][len(path)] if len(error["loc"]) > len(path) else "?"
        if isinstance(missing, int):
            return f"'{where}' has too few items (none at position {missing})"
        return f"'{where or 'experiment'}' is missing the key '{missing}'"
    if error["type"] == "value_error" and text.startswith(("'", "the ")):
        return text  # a sentence that names its full keys itself
    shown = "" if error["type"] == "value_error" or isinstance(error.get("input"), dict) \
        else f", got {error['input']!r}"
    return f"'{where or 'experiment'}': {text}{shown}"


def _path_in(raw: Any, loc: tuple) -> list:
    """Returns the part of pydantic's error location that exists in the raw YAML (pydantic
    adds union member names and `[key]` markers that no file holds)."""
    path, node = [], raw
    for part in loc:
        if isinstance(node, dict) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, (list, tuple)) and isinstance(part, int) and part < len(node):
            path.append(part)
            node = node[part]
        else:
            break
    return path


def _fields_at(model: type[BaseModel], path: list) -> list[str]:
    """Returns the field names of the section at `path` (empty if it is not a section)."""
    current: Any = model
    for part in path:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
    return list(getattr(current, "model_fields", {}))
