"""The model card states use, data, training, metrics and input spec."""
from __future__ import annotations

from pathlib import Path

from mammo_core.config import load_experiment
from mammo_core.model_card import CardFacts, render_card

ROOT = Path(__file__).resolve().parents[1]


def test_card_has_every_section_and_the_numbers():
    experiment = load_experiment(ROOT / "experiments" / "microcal.yaml")
    scores = {"auc": 0.99, "accuracy": 0.9, "sensitivity": 0.95, "specificity": 0.85,
              "f1": 0.91, "f2": 0.93}
    cv = {f"cv_test_{k}_{s}": v for k, v in scores.items() for s, v in (("mean", v), ("std", 0.01))}
    card = render_card(CardFacts(
        "mammo-microcal", "3", experiment, "abc123", {"normal": 414, "microcalcification": 383},
        167, 16, "run42", "deadbeef", cv, {"average": scores, "learned": scores},
        (0.1, 0.2, 0.3, 0.2, 0.2), 0.4321, 8))
    assert card.startswith("# mammo-microcal v3")
    assert "not for diagnosis" in card
    assert "414 normal, 383 microcalcification" in card and "`abc123`" in card
    assert "167 images in 16 groups" in card and "grouped by `case`" in card
    assert "auc 0.990 ± 0.010" in card
    assert "| learned | 0.990 | 0.900 | 0.950 | 0.850 | 0.910 | 0.930 |" in card
    assert "fold 2: 0.300" in card and "threshold 0.4321 (rule: `youden`)" in card
    assert "(N, 60, 60) or (N, 60, 60, 1)" in card and "wavelet filter (sym3" in card
    assert "`run42`" in card and "`deadbeef`" in card and experiment.fingerprint() in card
