"""Experiment configuration: YAML files loaded into typed, frozen dataclasses.

Every key a YAML file may hold is a dataclass field here. Unknown keys and values of
the wrong type are rejected with a ``ConfigError`` that names the dotted key path, so a
typo such as ``preprocessing.wavelet.famly`` fails loudly instead of being ignored.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from mammo_core.balance import METHODS as BALANCE_METHODS
from mammo_core.errors import ConfigError
from mammo_core.registry import ENSEMBLE_METHODS, FAMILIES, LAYOUTS


@dataclass(frozen=True)
class DataConfig:
    """Where the images are, how the collection is laid out, how to read labels and groups.

    layout: `folders` (class folders, e.g. microcal's {Train,Test}/{0,1} or CBIS'
    {mass,calc}_{train,test}), `cbis_npy` (CBIS-DDSM baseline/abnormal pairs in .npy
    arrays) or `mias` (mini-MIAS .pgm files with Info.txt).
    """

    root: str | None = None  # None: MAMMO_DATA_DIR, then the default locations
    # the folder name looked for beside the project (../shared/data/<collection>, data/<...>)
    collection: str = "microcal"
    layout: str = "folders"  # a name of mammo_core.registry.LAYOUTS
    image_size: tuple[int, int] = (60, 60)
    # images of another size are resampled to image_size (bilinear) instead of refused
    resize: bool = False
    # cbis_npy / mias: source label -> task label ("0".."4" for CBIS; NORM, CALC, CIRC,
    # SPIC, MISC, ARCH, ASYM for MIAS); images of labels not listed are left out
    label_map: dict[str, int] | None = None
    # cbis_npy: partition -> [images.npy, labels.npy]; null: every *_images.npy with the
    # *_labels.npy of the same prefix
    npy_files: dict[str, tuple[str, str]] | None = None
    # mias: whole (each mammogram downscaled) or roi (patches around each abnormality's
    # centre, and from normal tissue of normal images)
    mias_task: Literal["whole", "roi"] = "whole"
    mias_info_file: str = "Info.txt"
    # cbis_npy: one input per patient, the (baseline, abnormal) pair of patches, labelled
    # by the abnormal patch's task label (the siamese family takes pairs)
    pairs: bool = False
    roi_patch_size: int = 128  # source pixels per side of a cut patch (mias roi)
    normal_patches_per_image: int = 2  # mias roi: tissue patches per normal mammogram
    # class-folder name -> integer label; the folder names are also the class names
    classes: dict[str, int] = field(default_factory=lambda: {"0": 0, "1": 1})
    class_names: dict[int, str] = field(
        default_factory=lambda: {0: "normal", 1: "microcalcification"})
    extensions: tuple[str, ...] = (".png", ".pgm")  # folders layout
    # Regex matched at the start of each file name; named groups `case` and `roi`.
    # None gives every image its own case and ROI.
    filename_pattern: str | None = r"(?P<roi>(?P<case>\d{4})[^.]*)\.pgm_\d+"
    # null: the collection has no public download (a missing folder is an error)
    download_url: str | None = "https://www.pi.infn.it/~boccali/DL_class_data.tar.gz"
    # SHA-256 the downloaded tarball must have before anything is extracted; null refuses
    # the download and prints the digest it got, to be checked and pinned here.
    download_sha256: str | None = None
    download_max_bytes: int = 512 * 2**20  # a larger download is stopped while it streams
    # folder inside the tarball that holds the {Train,Test}/{0,1} tree
    archive_subdir: str = "IMAGES/Mammography_micro"

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
        loader, `predict`, `explain` and Serve); whole MIAS mammograms always are."""
        return self.resize or (self.layout == "mias" and self.mias_task == "whole")


@dataclass(frozen=True)
class WaveletConfig:
    enabled: bool = True
    family: str = "sym3"
    level: int = 3
    threshold_k: float = 1.5  # details kept only where |c| > k * sigma of their sub-band
    drop_approximation: bool = True  # removes the smooth tissue background
    drop_detail_levels: tuple[int, ...] = (1,)  # level 1 is mostly sensor noise


@dataclass(frozen=True)
class ClaheConfig:
    enabled: bool = False
    clip_limit: float = 0.01
    kernel_size: int = 8


@dataclass(frozen=True)
class PreprocessingConfig:
    wavelet: WaveletConfig = WaveletConfig()
    clahe: ClaheConfig = ClaheConfig()
    # per-patch standardisation, for insensitivity to a scanner's gain and offset: zero
    # mean and unit std before the wavelet filter (on intensities) or after it (on its
    # output), or robust (before the filter: median and MAD, which a few bright
    # calcifications barely move), or noise (before the filter: minus the median, divided
    # by the patch's own noise level, which a gain scales but tissue and class do not
    # move); none keeps the absolute contrast (docs/benchmarks.md)
    standardize: Literal["none", "before", "after", "robust", "noise"] = "none"


@dataclass(frozen=True)
class AugmentationConfig:
    flip: bool = True
    rotate90: bool = True
    contrast: float = 0.1  # max relative contrast change; 0 switches it off
    # uniform: factors in [1 - contrast, 1 + contrast]; log_uniform: factors in
    # [1 / (1 + contrast), 1 + contrast], uniform in log scale, so a doubling of the
    # contrast is as likely as a halving (a scanner's gain multiplies)
    contrast_scale: Literal["uniform", "log_uniform"] = "uniform"


@dataclass(frozen=True)
class SiameseConfig:
    """The siamese family: one shared encoder over a (baseline, abnormal) pair of patches."""

    trunk: str = "hypermodel"  # the family whose network (without its output) encodes a patch
    head_units: int = 32  # dense layer over [abnormal - baseline, baseline, abnormal]
    dropout: float = 0.3


@dataclass(frozen=True)
class BackboneConfig:
    """The ImageNet families (vgg16, inception_v3): weights, where to cut, what to train."""

    # imagenet (Keras' download, cached in ~/.keras/models), a local weights file, or null
    weights: str | None = None
    cut: str = "top"  # top = the whole convolutional base; top+k drops its last k blocks
    # backbone layers fine-tuned, counted down from the cut: null = all, 0 = frozen
    trainable_layers: int | None = None
    head_units: int = 64  # dense layer between the pooled features and the output
    dropout: float = 0.3


@dataclass(frozen=True)
class ModelConfig:
    """Fixed architecture choices; the searched ones live in `hyperparameters`.

    `family` picks the architecture (mammo_core.registry.FAMILIES); all but `hypermodel` are fixed published
    designs, and the conv_blocks ... pooling fields below shape only the hypermodel.
    """

    family: str = "hypermodel"
    backbone: BackboneConfig = BackboneConfig()
    siamese: SiameseConfig = SiameseConfig()

    conv_blocks: int = 3
    kernel_size: int = 3
    dense_units: int = 64  # first dense layer; each further layer halves it
    pooling: Literal["flatten", "avg", "max"] = "flatten"  # how the head sees the maps
    # Keras' default 0.99 needs hundreds of steps for the moving statistics to settle; with
    # ~16 steps per epoch and the small wavelet output they stay at their initial values
    # and every validation prediction collapses to one value (AUC 0.5). 0.9 settles fast.
    batchnorm_momentum: float = 0.9
    augmentation: AugmentationConfig = AugmentationConfig()


@dataclass(frozen=True)
class ParamSpace:
    """One searched hyperparameter: a finite `choice` or a continuous range."""

    type: Literal["choice", "uniform", "loguniform"]
    values: tuple[int | float | str, ...] | None = None
    low: float | None = None
    high: float | None = None

    def corners(self) -> tuple[float, ...]:
        """Returns the extreme values of this dimension (used to smoke-test the space)."""
        if self.type == "choice":
            return (min(self.values), max(self.values))
        return (self.low, self.high)


@dataclass(frozen=True)
class SplitConfig:
    group_by: Literal["case", "roi", "none"] = "case"
    test_fraction: float = 0.2
    val_fraction: float = 0.2  # of the part that remains after the test part
    seed: int = 0


@dataclass(frozen=True)
class CrossValidationConfig:
    """The fold plan: an ensemble hold-out first, then outer folds over the rest.

    Grouping key and seed come from `split`, so `train` and the search agree.
    """

    n_folds: int = 5
    holdout_fraction: float = 0.2  # cases no expert ever trains on (ensemble weights)
    inner_val_fraction: float = 0.25  # of each fold's development part, for selection


@dataclass(frozen=True)
class SearchConfig:
    """The Ray Tune budget per outer fold."""

    searcher: Literal["optuna", "hyperopt", "random"] = "optuna"
    trials_per_fold: int = 12
    max_epochs: int = 40
    grace_period: int = 8  # ASHA never stops a trial earlier: validation AUC is noisy
    reduction_factor: int = 3
    max_concurrent_trials: int = 2  # one trial per CPU core
    max_failures: int = 2  # retries of a trial whose worker died
    seed: int = 0
    # one worker per core trains trial after trial: no process start, no TensorFlow import
    # (benchmarks/search_profile.py: trial start-up 63 -> 11 core-seconds per fold)
    reuse_actors: bool = True


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 60
    batch_size: int = 32
    early_stopping_patience: int = 12
    monitor: str = "val_auc"  # selection on AUC, never accuracy (see docs)
    seed: int = 0
    threshold: float = 0.5
    # imbalanced classes, on the training part only (never validation or test):
    # class_weight (loss weights), oversample (repeat minority images), undersample
    class_balance: Literal[BALANCE_METHODS] = "none"


@dataclass(frozen=True)
class TrackingConfig:
    experiment_name: str = "mammo-microcal"
    registered_model_name: str = "mammo-microcal"


@dataclass(frozen=True)
class RegistryConfig:
    """How the registry step combines the fold experts and picks the decision threshold."""

    # fixed: `fixed_threshold`; youden: max sensitivity + specificity - 1; sensitivity: the
    # highest threshold whose hold-out sensitivity reaches `target_sensitivity`.
    threshold: Literal["fixed", "youden", "sensitivity"] = "youden"
    fixed_threshold: float = 0.5
    target_sensitivity: float = 0.9
    cross_fit_folds: int = 5  # grouped splits of the hold-out for honest ensemble estimates
    # which ensemble is registered: auto = the method with the best cross-fitted hold-out
    # AUC (ties: the simpler one, average before learned before best_single)
    method: Literal[("auto", *ENSEMBLE_METHODS)] = "auto"
    # binary tasks: Platt scaling of the combined probability, fitted with the weights
    calibration: Literal["none", "platt"] = "platt"
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"


@dataclass(frozen=True)
class ExplanationsConfig:
    """Grad-CAM and SHAP maps: what the register step stores and its runs show."""

    background_size: int = 50  # training patches per expert stored for SHAP's expectation
    partition_max_evals: int = 500  # model evaluations per patch of the model-agnostic SHAP
    patches_per_class: int = 3  # random patches of each class in the logged figures
    max_misclassified: int = 6  # misclassified patches in the logged figures, worst first
    seed: int = 0


@dataclass(frozen=True)
class Experiment:
    name: str
    data: DataConfig = DataConfig()
    preprocessing: PreprocessingConfig = PreprocessingConfig()
    model: ModelConfig = ModelConfig()
    hyperparameters: dict[str, int | float | str] = field(default_factory=dict)
    search_space: dict[str, ParamSpace] = field(default_factory=dict)
    split: SplitConfig = SplitConfig()
    cross_validation: CrossValidationConfig = CrossValidationConfig()
    search: SearchConfig = SearchConfig()
    training: TrainingConfig = TrainingConfig()
    tracking: TrackingConfig = TrackingConfig()
    registry: RegistryConfig = RegistryConfig()
    explanations: ExplanationsConfig = ExplanationsConfig()

    def to_dict(self) -> dict[str, Any]:
        """Returns the resolved configuration as plain YAML-friendly data."""
        return plain(dataclasses.asdict(self))

    def fingerprint(self) -> str:
        """Returns a short hash of the resolved configuration (identifies a setup)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


REQUIRED_HYPERPARAMETERS = ("init", "rate", "depth", "learning_rate")
# searched beside them: the family and the backbone's choices (override model.backbone)
SEARCHABLE = (*REQUIRED_HYPERPARAMETERS, "family", "cut", "trainable_layers", "head_units")


@dataclass(frozen=True)
class WaveletFeaturesConfig:
    """Which 2-D wavelet coefficients represent a patch for the classic classifiers."""

    family: str = "db5"
    level: int = 4
    keep_levels: tuple[int, ...] = (2, 3, 4)  # detail levels kept; 1 is the finest
    keep_approximation: bool = False
    # |c| instead of c: a calcification is a large coefficient of either sign, which a
    # linear model of the signed values cannot use
    magnitude: bool = False
    standardize: bool = True  # a scaler fitted on each training fold only


# One classifier's search grid: parameter -> values tried (the Cartesian product is searched).
# A list value (e.g. MLP layer sizes) is one tuple-valued choice; null is None.
ParamGrid = dict[str, tuple[int | float | str | tuple[int, ...] | None, ...]]


@dataclass(frozen=True)
class BaselinesSearchConfig:
    seed: int = 0
    max_concurrent: int = 2  # Ray tasks at once; one (classifier, fold) fit per CPU


@dataclass(frozen=True)
class BaselinesExperiment:
    """The wavelet-coefficient study: classic classifiers on the CNN search's folds."""

    name: str
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()  # used only when no search's fold plan is read
    cross_validation: CrossValidationConfig = CrossValidationConfig()
    features: WaveletFeaturesConfig = WaveletFeaturesConfig()
    classifiers: dict[str, ParamGrid] = field(default_factory=dict)
    search: BaselinesSearchConfig = BaselinesSearchConfig()
    tracking: TrackingConfig = TrackingConfig()
    threshold: float = 0.5  # for accuracy, sensitivity, specificity, F1, F2

    to_dict = Experiment.to_dict
    fingerprint = Experiment.fingerprint


def load_experiment(path: str | Path) -> Experiment:
    """Returns the Experiment described by the YAML file at `path`.

    Raises ConfigError naming the key for unknown keys, wrong types or bad values.
    """
    return experiment_from_dict(_read_yaml(path))


def load_baselines(path: str | Path) -> BaselinesExperiment:
    """Returns the BaselinesExperiment described by the YAML file at `path`.

    Raises ConfigError naming the key for unknown keys, wrong types or bad values;
    classifier names and their grid parameters are checked by `mammo_core.classifiers`.
    """
    # imported here, not at the top: scikit-learn is needed only for a baselines config
    from mammo_core.classifiers import validate_grids

    experiment = _build(BaselinesExperiment, _read_yaml(path), "")
    validate_grids(experiment.classifiers)
    features = experiment.features
    if features.level < 1 or any(not 1 <= lvl <= features.level for lvl in features.keep_levels):
        raise ConfigError("'features' needs level >= 1 and keep_levels within 1..level")
    if not features.keep_levels and not features.keep_approximation:
        raise ConfigError("'features' keeps no coefficients: set keep_levels or keep_approximation")
    if not experiment.classifiers:
        raise ConfigError("'classifiers' must name at least one classifier")
    if not 0 < experiment.threshold < 1 or experiment.search.max_concurrent < 1:
        raise ConfigError("'threshold' must lie in (0, 1) and 'search.max_concurrent' be >= 1")
    return experiment


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


def experiment_from_dict(raw: dict[str, Any]) -> Experiment:
    """Returns the Experiment for already-parsed data (same checks as load_experiment)."""
    experiment = _build(Experiment, raw, "")
    _validate(experiment)
    return experiment


def flat_params(experiment: Experiment) -> dict[str, str]:
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


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'experiment'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        key = _join(where, unknown[0])
        raise ConfigError(f"unknown config key '{key}' (allowed here: {', '.join(sorted(names))})")
    kwargs = {name: _coerce(hints[name], value, _join(where, name)) for name, value in raw.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"{where or 'experiment'}: {err}") from err


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for candidate in inner[:-1]:
            try:
                return _coerce(candidate, value, where)
            except ConfigError:
                continue
        return _coerce(inner[-1], value, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"'{where}' must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{where}' must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"'{where}' must have {len(args)} items, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{where}' must be a mapping, got {value!r}")
        key_type, value_type = args
        return {_coerce(key_type, k, f"{where}.{k}"): _coerce(value_type, v, f"{where}.{k}")
                for k, v in value.items()}
    return _scalar(hint, value, where)


def _scalar(hint: Any, value: Any, where: str) -> Any:
    # YAML reads 1e-3 as a string; ints are fine where floats are expected, bools never are.
    if hint is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif hint is bool and isinstance(value, bool):
        return value
    elif hint is str and isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"'{where}' must be of type {hint.__name__}, got {value!r}")


def _validate(experiment: Experiment) -> None:
    """Checks value ranges and cross-field rules that types alone cannot express."""
    data, wavelet = experiment.data, experiment.preprocessing.wavelet
    _validate_data(data)
    if any(side <= 0 for side in data.image_size):
        raise ConfigError(f"'data.image_size' must be positive, got {data.image_size}")
    if wavelet.level < 1 or wavelet.threshold_k < 0:
        raise ConfigError("'preprocessing.wavelet' needs level >= 1 and threshold_k >= 0")
    if any(not 1 <= lvl <= wavelet.level for lvl in wavelet.drop_detail_levels):
        raise ConfigError("'preprocessing.wavelet.drop_detail_levels' must lie in 1..level")
    for frac in ("test_fraction", "val_fraction"):
        if not 0 < getattr(experiment.split, frac) < 1:
            raise ConfigError(f"'split.{frac}' must lie strictly between 0 and 1")
    _validate_search(experiment)
    if experiment.model.family not in FAMILIES:
        raise ConfigError(f"'model.family' must be one of {list(FAMILIES)}, "
                          f"got {experiment.model.family!r}")
    _validate_pairs(experiment)
    family = experiment.search_space.get("family")
    families = set(family.values) if family else {experiment.model.family}
    missing = [k for k in REQUIRED_HYPERPARAMETERS if k not in experiment.hyperparameters]
    trunks = families | ({experiment.model.siamese.trunk} if "siamese" in families else set())
    if missing and "hypermodel" in trunks:  # the other families have fixed designs
        raise ConfigError(f"'hyperparameters' is missing {missing}")
    for name, space in experiment.search_space.items():
        _validate_space(name, space)


def _validate_data(data: DataConfig) -> None:
    labels = data.label_map if data.layout != "folders" else data.classes
    key = "label_map" if data.layout != "folders" else "classes"
    if labels is None and data.layout == "cbis_npy":
        raise ConfigError("'data.label_map' is required for the cbis_npy layout "
                          "(source labels 0..4 -> task labels)")
    if labels is not None and len(set(labels.values())) < 2:
        raise ConfigError(f"'data.{key}' must map to at least two distinct labels")
    if data.layout not in LAYOUTS:
        raise ConfigError(f"'data.layout' must be one of {list(LAYOUTS)}, got {data.layout!r}")
    if data.roi_patch_size < 8 or data.normal_patches_per_image < 0:
        raise ConfigError("'data.roi_patch_size' must be >= 8 and "
                          "'data.normal_patches_per_image' >= 0")


def _validate_pairs(experiment: Experiment) -> None:
    """Pairs of patches and the siamese family go together."""
    family = experiment.search_space.get("family")
    families = set(family.values) if family else {experiment.model.family}
    if experiment.data.pairs and families != {"siamese"}:
        raise ConfigError("'data.pairs' feeds (baseline, abnormal) pairs: 'model.family' must "
                          "be siamese (and only siamese searched)")
    if "siamese" in families and not experiment.data.pairs:
        raise ConfigError("the siamese family takes pairs: set 'data.pairs: true' "
                          "(cbis_npy layout)")
    if experiment.data.pairs and experiment.data.layout != "cbis_npy":
        raise ConfigError("'data.pairs' needs the cbis_npy layout (baseline/abnormal pairs)")
    trunk = experiment.model.siamese.trunk
    if trunk not in FAMILIES or trunk == "siamese":
        raise ConfigError(f"'model.siamese.trunk' must be one of "
                          f"{[f for f in FAMILIES if f != 'siamese']}, got {trunk!r}")


def _validate_search(experiment: Experiment) -> None:
    cv, search = experiment.cross_validation, experiment.search
    if cv.n_folds < 2:
        raise ConfigError("'cross_validation.n_folds' must be at least 2")
    for frac in ("holdout_fraction", "inner_val_fraction"):
        if not 0 < getattr(cv, frac) < 1:
            raise ConfigError(f"'cross_validation.{frac}' must lie strictly between 0 and 1")
    for key in ("trials_per_fold", "max_epochs", "grace_period", "max_concurrent_trials"):
        if getattr(search, key) < 1:
            raise ConfigError(f"'search.{key}' must be at least 1")
    if search.grace_period > search.max_epochs:
        raise ConfigError("'search.grace_period' must not exceed 'search.max_epochs'")
    if search.reduction_factor < 2:
        raise ConfigError("'search.reduction_factor' must be at least 2")
    registry = experiment.registry
    if not 0 < registry.fixed_threshold < 1 or not 0 < registry.target_sensitivity <= 1:
        raise ConfigError("'registry.fixed_threshold' must lie in (0, 1) and "
                          "'registry.target_sensitivity' in (0, 1]")
    if registry.cross_fit_folds < 2:
        raise ConfigError("'registry.cross_fit_folds' must be at least 2")
    explain = experiment.explanations
    if min(explain.background_size, explain.partition_max_evals, explain.patches_per_class) < 1:
        raise ConfigError("'explanations.background_size', 'partition_max_evals' and "
                          "'patches_per_class' must be at least 1")


def _validate_space(name: str, space: ParamSpace) -> None:
    where = f"search_space.{name}"
    if name not in SEARCHABLE:
        raise ConfigError(f"unknown hyperparameter '{where}' "
                          f"(searchable: {', '.join(SEARCHABLE)})")
    if name == "family":
        unknown = [v for v in (space.values or ()) if v not in FAMILIES]
        if space.type != "choice" or unknown:
            raise ConfigError(f"'{where}' must be a choice of {list(FAMILIES)}, got "
                              f"{unknown or space.type}")
    if space.type == "choice":
        if not space.values:
            raise ConfigError(f"'{where}.values' must list at least one value for a choice")
    elif space.low is None or space.high is None or not space.low < space.high:
        raise ConfigError(f"'{where}' needs low < high for a {space.type} range")
    elif space.type == "loguniform" and space.low <= 0:
        raise ConfigError(f"'{where}.low' must be > 0 for a loguniform range")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


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
