"""`adapt` entry point: map a new site's intensity scale onto the training one, from its
unlabelled patches, and register the model with that mapping for the site.

    mlflow run . -e adapt --env-manager local -P data_dir=/data/site_b -P site=site_b
    python -m tune.adapt --data-dir /data/site_b --site site_b [--labels]

A single patch does not carry its scanner's gain; a batch does. The registered model
keeps its training patches' intensity statistics (`intensity_reference.json`, since
models kept them); this step estimates the site's contrast gain, offset and extra white
noise against them from every image under `--data-dir` (no labels read), with bootstrap
intervals, and
refuses when the batch is too small or the estimate too uncertain to help
(`mammo_core/adaptation.py` says how, and why the class mix does not drive it). It then
registers a version with the same experts whose pyfunc maps each patch onto the training
scale before scoring, under the alias `site-<site>`, so Serve and every entry point use it
unchanged. With `--labels`, the folder is read as the study's class folders and the
calibration is refitted on the mapped scores on top (as `recalibrate` does).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402

from mammo_core.adaptation import AdaptationError, IntensityMap, estimate_map, patch_features  # noqa: E402
from mammo_core.config import Experiment  # noqa: E402
from mammo_core.patches import as_unit_patches  # noqa: E402
from mammo_core.predictor import EnsemblePredictor  # noqa: E402
from mammo_core.readers.folders import cases_of  # noqa: E402
from mammo_core.splits import leakage_groups  # noqa: E402
from mammo_core.tracking import log_figure, registry_reference, tracked_run, use_tracking_store  # noqa: E402
from tune.predict import image_files, read_images  # noqa: E402
from tune.project import (PROJECT_ROOT, UsageError, as_trained,  # noqa: E402
                          default_model_uri, load_config, load_data, load_ensemble, run_entry)
from tune.recalibrate import (kept_threshold, register_site_version, site_ensemble,  # noqa: E402
                              site_name, site_parser)


def main(argv: list[str] | None = None) -> int:
    parser = site_parser(__doc__.splitlines()[0])
    parser.add_argument("--labels", default="false", choices=["true", "false"],
                        help="true: the folder holds the study's class folders; the "
                             "calibration is refitted on the mapped scores too")
    parser.add_argument("--threshold", default="keep", choices=["keep", "refit"],
                        help="with labels: keep the registered threshold or re-choose it")
    parser.add_argument("--bootstrap", type=int, default=200,
                        help="bootstrap draws for the mapping's interval")
    args = parser.parse_args(argv)

    def body() -> None:
        experiment, _ = load_config(args.config)
        print(f"tracking: {use_tracking_store(PROJECT_ROOT)}")
        adapt(experiment, args.data_dir, args.model_uri, args.site, args.labels == "true",
              args.threshold, args.bootstrap, run_id=os.environ.get("MLFLOW_RUN_ID"))

    return run_entry(body)


def adapt(experiment: Experiment, data_dir: str, model_uri: str = "", site: str = "",
          labels: bool = False, threshold: str = "keep", bootstrap: int = 200,
          run_id: str | None = None) -> tuple[str, str]:
    """Registers the site-adapted version; returns (version, alias).

    Logs the mapping (params adapt.*, metrics gain / offset and their interval ends,
    estimated class shares), figures/site_intensities.png and the model; with labels,
    before_* / after_* metrics as `recalibrate` does.
    """
    if not data_dir:
        raise UsageError("adapt needs a folder of the new site's images: pass -P data_dir=")
    uri = model_uri or default_model_uri(experiment)
    site = site_name(site or Path(data_dir).name)
    predictor = load_ensemble(uri)
    if getattr(predictor, "reference", None) is None:
        raise UsageError(f"{uri} was registered before models kept their training "
                         "intensities (no intensity_reference.json): register its search "
                         "again (mlflow run . -e register) to adapt it to a site")
    experiment = as_trained(experiment, predictor, uri)
    raw, dataset, cases = site_images(experiment, predictor, data_dir, labels)
    units = as_unit_patches(raw, predictor.experiment.data.image_size, predictor.bit_depth,
                            pairs=predictor.experiment.data.pairs)
    with tracked_run(experiment.tracking.experiment_name, f"adapt-{site}",
                     tags={"mammo.entry_point": "adapt", "mammo.kind": "adapt",
                           "mammo.model_uri": uri, "mammo.site": site}, run_id=run_id):
        mlflow.log_params({"resolved_model_uri": uri, "site": site, "images": len(raw),
                           "labels_used": labels, "data_root": str(data_dir)})
        try:
            mapping = estimate_map(units, predictor.reference, bootstrap=bootstrap,
                                   cases=cases)
        except AdaptationError as err:
            raise UsageError(f"cannot adapt to site `{site}`: {err}") from err
        print(f"site `{site}`: {mapping.describe()}", flush=True)
        log_mapping(mapping, units, predictor)
        adapted = EnsemblePredictor(predictor.experts, predictor.ensemble, predictor.experiment,
                                    predictor.bit_depth, predictor.backgrounds,
                                    predictor.reference, mapping)
        if dataset is not None:
            experts_p = adapted.expert_probabilities(adapted.model_inputs(raw))
            adapted.ensemble = site_ensemble(
                adapted.ensemble, experts_p, dataset.labels, leakage_groups(dataset, "case"),
                adapted.experiment, kept_threshold(adapted.ensemble, threshold))
        name = registry_reference(uri)["name"] or experiment.tracking.registered_model_name
        card = site_card(name, uri, site, mapping, len(raw), dataset is not None)
        return register_site_version(adapted, raw, name, site, uri, card,
                                     {"mammo.adapted_from": uri,
                                      "mammo.intensity_map": mapping.describe()})


def site_images(experiment: Experiment, predictor: EnsemblePredictor, data_dir: str,
                labels: bool):
    """Returns (raw images, the labelled Dataset or None, each image's case or None):
    every image under the folder when unlabelled, the study's class folders when
    labelled. Cases come from the file names by the study's `data.filename_pattern`
    when every name matches it; they let the interval draw whole cases."""
    if labels:
        dataset, _ = load_data(experiment, data_dir, any_file_names=True)
        cases = cases_of([Path(p).name for p in dataset.paths],
                         experiment.data.filename_pattern)
        return dataset.images, dataset, cases
    root = Path(data_dir)
    if not root.is_dir():
        raise UsageError(f"no folder {root}")
    files = image_files(root)
    cases = cases_of([f.name for f in files], experiment.data.filename_pattern)
    print(f"site images: {len(files)} files under {root} (labels not read); "
          + (f"{len(np.unique(cases))} cases by their file names" if cases is not None else
             "file names do not give their cases (data.filename_pattern): the interval "
             "treats every image as its own case"), flush=True)
    return read_images(files, experiment.data.image_size, experiment.data.resizes,
                       predictor.bit_depth), None, cases


def log_mapping(mapping: IntensityMap, units: np.ndarray, predictor: EnsemblePredictor) -> None:
    """Logs the mapping's params and metrics and figures/site_intensities.png."""
    mlflow.log_params({"adapt.gain": f"{mapping.gain:.4f}", "adapt.offset": f"{mapping.offset:.5f}",
                       "adapt.noise": f"{mapping.noise:.5f}",
                       "adapt.identity": mapping.identity,
                       "adapt.cases": mapping.cases or "unknown"})
    mlflow.log_metrics({"gain_estimate": mapping.estimate[0], "offset_estimate": mapping.estimate[1],
                        "gain_low": mapping.gain_interval[0], "gain_high": mapping.gain_interval[1],
                        "offset_low": mapping.offset_interval[0],
                        "offset_high": mapping.offset_interval[1],
                        "noise_low": mapping.noise_interval[0],
                        "noise_high": mapping.noise_interval[1]}
                       | {f"estimated_share_{k}": s for k, s in enumerate(mapping.class_shares)})
    mlflow.log_dict(mapping.to_dict(), "intensity_map.json")
    log_figure(intensities_figure(units, mapping, predictor), "figures/site_intensities.png")


def intensities_figure(units: np.ndarray, mapping: IntensityMap,
                       predictor: EnsemblePredictor) -> plt.Figure:
    """Returns the site's patch contrast (IQR) and brightness (mean) before and after the
    mapping, over the training reference's class centres."""
    before, after = patch_features(units), patch_features(mapping.apply(units))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(np.exp(before[:, 0]), before[:, 1], s=10, c="0.6", label="site, as sent")
    ax.scatter(np.exp(after[:, 0]), after[:, 1], s=10, c="tab:blue", label="site, mapped")
    for k, density in enumerate(predictor.reference.densities):
        name = predictor.class_names[k] if k < len(predictor.class_names) else str(k)
        ax.scatter(np.exp(density.means[:, 0]), density.means[:, 1], marker="x", s=80,
                   label=f"training centres: {name}")
    ax.set(xscale="log", xlabel="patch interquartile range", ylabel="patch mean",
           title=f"gain {mapping.gain:.3f}, offset {mapping.offset:+.4f}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def site_card(name: str, uri: str, site: str, mapping: IntensityMap, images: int,
              labelled: bool) -> str:
    """Returns the site version's model card (`{version}` filled in on registration)."""
    source = registry_reference(uri)
    return (f"# {name} v{{version}}: adapted to site `{site}`\n\n"
            f"The experts, weights{'' if labelled else ', calibration'} and threshold of "
            f"`{uri}` (v{source['version']}). Each patch is mapped onto the training "
            f"intensity scale before the experts (a noisier site's noise shrunk out by "
            f"wavelet shrinkage, then x -> mean + (x - mean) / gain - offset): "
            f"{mapping.describe()}, estimated from {images} "
            f"{'labelled' if labelled else 'unlabelled'} images of site `{site}` "
            f"(adapt run `{mlflow.active_run().info.run_id}`)"
            + ("; the calibration and threshold were then refitted on their labels." if labelled
               else ".")
            + " Research only; not for diagnosis.\n")


if __name__ == "__main__":
    sys.exit(main())
