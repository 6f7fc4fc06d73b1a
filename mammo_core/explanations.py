"""Explanations: which pixels drove a patch's probability.

Three methods, all returning one map per patch with the patch's shape (H, W):

- Grad-CAM on an expert's last convolution layer: where the evidence for class 1 sits,
  in [0, 1] (upsampled from the layer's grid).
- Deep SHAP (`shap.DeepExplainer`) per expert, against a background of that expert's own
  training patches: signed pixel attributions that add up to the probability minus the
  expected probability over the background.
- Partition SHAP (`shap.Explainer` with an image masker) on any function of raw patches,
  e.g. the whole registered pyfunc: model-agnostic, slower.

The ensemble's maps combine the experts' maps with the ensemble weights. For SHAP this
is exact: the weighted probability is the weighted sum of the experts', so the weighted
attributions add up to it. The reported probability is the ensemble's calibrated one (what
`predict` answers); calibration is a monotone map of the weighted probability.

A siamese model explains a (baseline, abnormal) pair: its maps are the two patches' maps
side by side (H, 2W), baseline left, like `metrics.side_by_side` shows the pair. Partition
SHAP takes single patches only.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from mammo_core.config import PreprocessingConfig
from mammo_core.families import BODY, ENCODER, FEATURES, MERGE, merge_pair
from mammo_core.hypermodel import AUGMENTATION
from mammo_core.patches import as_unit_patches
from mammo_core.predictor import EnsemblePredictor
from mammo_core.preprocessing import preprocess

METHODS = ("gradcam", "shap", "partition")


@dataclass(frozen=True)
class Explanation:
    method: str
    maps: np.ndarray  # (N, H, W)
    probability: np.ndarray  # (N,) as `predict` reports it (the ensemble's: calibrated)
    expected_value: float | None  # SHAP's base value; None for Grad-CAM
    experts: tuple[int, ...]  # the experts whose maps were combined
    # (N,) what the maps decompose: the weighted probability before the ensemble's
    # calibration (SHAP maps add up to it minus `expected_value`); None = `probability`
    explained: np.ndarray | None = None


def inference_model(model: keras.Model, tap: str | None = None) -> keras.Model:
    """Returns the same layers (shared weights) without the training-only augmentation stack.

    DeepExplainer follows the graph op by op and cannot pass the random layers' graph,
    even though they are the identity at inference (measured: attributions then miss the
    output by 0.5). Model families keep their network as one nested model (BODY), which
    is used as it is; the hypermodel is a plain chain, so its layers are re-applied in order.
    With `tap`, the model outputs [that layer's output, the probability] (for Grad-CAM).
    """
    body = next((layer for layer in model.layers if layer.name == BODY), None)
    if body is not None:
        if not tap:
            return body
        return keras.Model(body.inputs, [body.get_layer(tap).output, body.output],
                           name=f"{model.name}_inference")
    inputs = keras.Input(model.input_shape[1:])
    x, tapped = inputs, None
    for layer in model.layers[1:]:
        if layer.name != AUGMENTATION:
            x = layer(x)
            tapped = x if layer.name == tap else tapped
    if tap and tapped is None:
        raise ValueError(f"model '{model.name}' has no layer '{tap}'")
    return keras.Model(inputs, [tapped, x] if tap else x, name=f"{model.name}_inference")


def pair_inference_model(model: keras.Model, tap: str | None = None) -> keras.Model:
    """Returns a siamese model rebuilt from its own layers without the augmentation: the
    shared encoder's inference model applied to both patches, then the pair head. With
    `tap`, outputs [baseline's tapped layer, abnormal's tapped layer, probability]."""
    probe = inference_model(model.get_layer(ENCODER), tap)
    pair = keras.Input(model.input_shape[1:], name="pair")
    outs = [probe(pair[:, k]) for k in (0, 1)]
    baseline, abnormal = [out[1] if tap else out for out in outs]
    names = [layer.name for layer in model.layers]
    merge = "difference" if "difference" in names else "concat"
    x = merge_pair(merge, baseline, abnormal, join=model.get_layer(MERGE),
                   difference=model.get_layer("difference") if merge == "difference" else None)
    for layer in model.layers[names.index(MERGE) + 1:]:  # the head, in the model's order
        x = layer(x)
    return keras.Model(pair, [outs[0][0], outs[1][0], x] if tap else x,
                       name=f"{model.name}_inference")


def is_pair_model(model: keras.Model) -> bool:
    """Returns whether the model takes (baseline, abnormal) pairs (the siamese family)."""
    return any(layer.name == ENCODER for layer in model.layers)


def last_conv_layer(model: keras.Model) -> str:
    """Returns the layer Grad-CAM looks at: a backbone's feature map (FEATURES), else the
    last 2-D convolution, in the model or in its nested BODY."""
    network = next((layer for layer in model.layers if layer.name == BODY), model)
    names = [layer.name for layer in network.layers]
    if FEATURES in names:
        return FEATURES
    for layer in reversed(network.layers):
        if isinstance(layer, keras.layers.Conv2D):
            return layer.name
    raise ValueError(f"model '{model.name}' has no Conv2D layer for Grad-CAM")


def gradcam(model: keras.Model, images: np.ndarray, layer: str | None = None) -> np.ndarray:
    """Returns Grad-CAM maps (N, H, W) in [0, 1] for preprocessed images (N, H, W, 1).

    Channel weights are the spatial mean of d(probability)/d(activation); the weighted
    sum of channels is rectified, upsampled bilinearly and scaled to a maximum of 1 per
    image (all zeros where nothing speaks for class 1).
    """
    x = tf.convert_to_tensor(images, tf.float32)
    if is_pair_model(model):  # both patches' maps, side by side, on one scale
        probe = pair_inference_model(model, layer or last_conv_layer(model.get_layer(ENCODER)))
        with tf.GradientTape() as tape:
            *activations, output = probe(x, training=False)
            score = output[:, 0]
        grads = tape.gradient(score, activations)
        cam = np.concatenate([_cam(g, a, images.shape[2:4]) for g, a in zip(grads, activations)],
                             axis=2)
    else:
        probe = inference_model(model, tap=layer or last_conv_layer(model))
        with tf.GradientTape() as tape:
            activations, output = probe(x, training=False)
            score = output[:, 0]
        cam = _cam(tape.gradient(score, activations), activations, images.shape[1:3])
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)


def _cam(grads, activations, size: tuple[int, int]) -> np.ndarray:
    """Returns the rectified, gradient-weighted channel sum, upsampled to `size`: (N, H, W)."""
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1))[..., tf.newaxis]
    return tf.image.resize(cam, size, method="bilinear")[..., 0].numpy()


def deep_shap(model: keras.Model, images: np.ndarray,
              background: np.ndarray) -> tuple[np.ndarray, float]:
    """Returns (attributions (N, H, W), expected probability over `background`).

    Attributions of each image add up to its probability minus the expected value.
    """
    import shap  # heavy import (numba): only where SHAP is used
    from shap.explainers._deep import deep_tf

    # The backbones' `upsize` layer is a bilinear resize, which SHAP's TF graph walker
    # does not know ("gradient registry has no entry for shap_ResizeBilinear"). It is
    # linear in its image, so the DeepLIFT rule for it is its plain gradient.
    for op in ("ResizeBilinear", "ResizeNearestNeighbor"):
        deep_tf.op_handlers.setdefault(op, deep_tf.linearity_1d(0))
    logger, level = tf.get_logger(), tf.get_logger().level
    # Each explainer traces its own gradient graph; TF's "retracing" warning says so.
    logger.setLevel("ERROR")
    try:
        with warnings.catch_warnings():
            # "graph support has been removed in eager mode": the plain CNN needs none of it.
            warnings.filterwarnings("ignore", message="Your TensorFlow version is newer")
            warnings.filterwarnings("ignore", message="The structure of `inputs`")
            network = (pair_inference_model(model) if is_pair_model(model)
                       else inference_model(model))
            explainer = shap.DeepExplainer(network, background.astype(np.float32))
            values = explainer.shap_values(images.astype(np.float32), check_additivity=False)
    finally:
        logger.setLevel(level)
    values = np.asarray(values, dtype=np.float64)
    if is_pair_model(model):  # (N, 2, H, W): the two patches side by side
        values = values.reshape(images.shape[:4])
        return np.concatenate([values[:, 0], values[:, 1]], axis=2), float(
            np.ravel(explainer.expected_value)[0])
    return values.reshape(images.shape[:3]), float(np.ravel(explainer.expected_value)[0])


def partition_shap(predict: Callable[[np.ndarray], np.ndarray], units: np.ndarray,
                   max_evals: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (attributions (N, H, W), base values (N,)) of `predict` on [0, 1] patches.

    Hidden regions are filled with the patch's own mean intensity: a numeric mask keeps
    the input in [0, 1] (SHAP's blur/inpaint masks need OpenCV and cast to uint8), and
    the mean removes structure without inventing a brightness change.
    """
    import shap

    maps, bases = [], []
    for image in units.astype(np.float64)[..., np.newaxis]:  # the masker wants (H, W, C)
        masker = shap.maskers.Image(np.full(image.shape, image.mean()), image.shape)
        explainer = shap.Explainer(lambda x: np.asarray(predict(x), dtype=np.float64),
                                   masker, algorithm="partition")
        result = explainer(image[np.newaxis], max_evals=max_evals, silent=True)
        maps.append(np.asarray(result.values[0]).reshape(image.shape[:2]))
        bases.append(float(np.ravel(result.base_values)[0]))
    return np.stack(maps), np.array(bases)


def explain(predictor: EnsemblePredictor, raw: np.ndarray, method: str,
            expert: int | None = None, max_evals: int = 500) -> Explanation:
    """Returns the ensemble's explanation of raw patches (or one expert's, if `expert`).

    Experts with zero ensemble weight do not contribute and are skipped. Deep SHAP needs
    the backgrounds stored with the model; raises ValueError without them. Raises
    PatchError for input that is not a batch of patches.
    """
    if method not in METHODS:
        raise ValueError(f"unknown explanation method '{method}' (known: {', '.join(METHODS)})")
    chosen, weights = _chosen_experts(predictor, expert)
    if method == "partition":
        if predictor.experiment.data.pairs:
            raise ValueError("partition SHAP takes single patches; explain pairs with "
                             "gradcam or shap")
        return _partition(predictor, raw, chosen, weights, max_evals, expert)
    images = predictor.model_inputs(raw)
    weighted = predictor.expert_probabilities(images)[:, chosen] @ weights
    probability = _reported(predictor, weighted, expert)
    if method == "gradcam":
        maps = sum(w * gradcam(predictor.experts[k], images) for k, w in zip(chosen, weights))
        return Explanation(method, maps, probability, None, tuple(chosen), weighted)
    if len(predictor.backgrounds) != len(predictor.experts):
        raise ValueError("this model has no stored SHAP background (registered before "
                         "explanations existed): use gradcam or partition")
    maps, expected = 0.0, 0.0
    for k, w in zip(chosen, weights):
        values, base = deep_shap(predictor.experts[k], images, predictor.backgrounds[k])
        maps, expected = maps + w * values, expected + w * base
    return Explanation(method, maps, probability, expected, tuple(chosen), weighted)


def shap_backgrounds(images: np.ndarray, train_parts: Sequence[np.ndarray],
                     preprocessing: PreprocessingConfig, size: int,
                     seed: int) -> tuple[np.ndarray, ...]:
    """Returns, per expert, `size` preprocessed patches drawn from that expert's own
    training part (seeded): the reference its Deep SHAP values are measured against."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(part, min(size, len(part)), replace=False) for part in train_parts]
    return tuple(preprocess(images[np.sort(pick)], preprocessing) for pick in picks)


def most_reliable_expert(predictor: EnsemblePredictor) -> int:
    """Returns the index of the expert with the largest ensemble weight."""
    return int(np.argmax(predictor.ensemble.weights))


def _chosen_experts(predictor: EnsemblePredictor,
                    expert: int | None) -> tuple[list[int], np.ndarray]:
    if expert is not None:
        if not 0 <= expert < len(predictor.experts):
            raise ValueError(f"expert must lie in 0..{len(predictor.experts) - 1}, got {expert}")
        return [expert], np.ones(1)
    weights = np.asarray(predictor.ensemble.weights, dtype=np.float64)
    chosen = [k for k, w in enumerate(weights) if w > 0]
    return chosen, weights[chosen]


def _partition(predictor: EnsemblePredictor, raw: np.ndarray, chosen: Sequence[int],
               weights: np.ndarray, max_evals: int, expert: int | None = None) -> Explanation:
    units = as_unit_patches(raw, predictor.experiment.data.image_size, predictor.bit_depth)

    def predict(batch: np.ndarray) -> np.ndarray:
        return predictor.expert_probabilities(predictor.model_inputs(batch))[:, chosen] @ weights

    maps, bases = partition_shap(predict, units, max_evals)
    weighted = predict(units)
    return Explanation("partition", maps, _reported(predictor, weighted, expert),
                       float(bases.mean()), tuple(chosen), weighted)


def _reported(predictor: EnsemblePredictor, weighted: np.ndarray,
              expert: int | None) -> np.ndarray:
    """Returns the probability an explanation reports: the ensemble's calibrated one (what
    `predict` says) for the ensemble, the expert's own for one expert. The maps explain the
    weighted probability before calibration, a monotone map of it."""
    return weighted if expert is not None else predictor.ensemble.calibration.apply(weighted)


def overlay_png(patch: np.ndarray, heatmap: np.ndarray, signed: bool, scale: int = 4) -> bytes:
    """Returns a PNG of the patch in grey with the heatmap blended over it, `scale`x larger.

    Unsigned maps (Grad-CAM, [0, 1]) use the `jet` colours; signed maps (SHAP) use
    blue (against class 1) to red (for class 1), symmetric around 0.
    """
    from matplotlib import colormaps

    grey = np.clip(patch, 0, 1)
    if signed:
        bound = float(np.abs(heatmap).max()) or 1.0
        colours = colormaps["bwr"]((heatmap / bound + 1) / 2)[..., :3]
        alpha = np.clip(np.abs(heatmap) / bound, 0, 1)[..., None] * 0.8
    else:
        colours = colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3]
        alpha = np.full(heatmap.shape + (1,), 0.45)
    blended = (1 - alpha) * grey[..., None] + alpha * colours
    image = Image.fromarray((blended * 255).astype(np.uint8)).resize(
        (patch.shape[1] * scale, patch.shape[0] * scale), Image.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
