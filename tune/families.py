"""The search parent's comparison of model families, when the search space holds several.

Only the best trial of each fold is scored on that fold's test part, so families are
compared where every trial was scored: each family's best inner-validation AUC per fold
(the value the searcher selected on), next to its weights, seconds per epoch and how
many fold experts it won.
"""
from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

from mammo_core import metrics
from mammo_core.tracking import log_figure


def trial_table(fold_runs: dict[int, str]) -> pd.DataFrame:
    """Returns one row per trial of the folds: fold, family, val_auc, params, seconds."""
    client = mlflow.MlflowClient()
    rows = []
    for fold, run_id in sorted(fold_runs.items()):
        experiment_id = client.get_run(run_id).info.experiment_id
        for trial in client.search_runs([experiment_id],
                                        f"tags.mlflow.parentRunId = '{run_id}' "
                                        "and tags.mammo.kind = 'trial'"):
            history = client.get_metric_history(trial.info.run_id, "epoch_seconds")
            rows.append({"fold": fold, "family": trial.data.params.get("family", "hypermodel"),
                         "val_auc": trial.data.metrics.get("val_auc", np.nan),
                         "params": trial.data.metrics.get("n_weights", np.nan),
                         "seconds_per_epoch": np.median([m.value for m in history])
                         if history else np.nan})
    return pd.DataFrame(rows)


def log_family_comparison(fold_runs: dict[int, str], winners: dict[int, str]) -> pd.DataFrame:
    """Logs families/comparison.csv and .md, figures/families.png and
    family_<name>_val_auc_mean/_std; returns the table, best family first.

    `winners` maps each fold to the family of its expert.
    """
    trials = trial_table(fold_runs)
    best = trials.groupby(["family", "fold"])["val_auc"].max().unstack("fold")
    table = pd.DataFrame({
        "val_auc_mean": best.mean(axis=1), "val_auc_std": best.std(axis=1, ddof=1),
        "folds": best.notna().sum(axis=1),
        "trials": trials.groupby("family").size(),
        "params": trials.groupby("family")["params"].median(),
        "seconds_per_epoch": trials.groupby("family")["seconds_per_epoch"].median(),
        "experts_won": pd.Series(list(winners.values())).value_counts(),
    }).fillna({"experts_won": 0}).sort_values("val_auc_mean", ascending=False)
    table.index.name = "family"
    for family, row in table.iterrows():
        mlflow.log_metrics({f"family_{family}_val_auc_mean": row["val_auc_mean"],
                            f"family_{family}_val_auc_std": np.nan_to_num(row["val_auc_std"])})
    mlflow.log_text(table.to_csv(float_format="%.6g"), "families/comparison.csv")
    mlflow.log_text(markdown(table), "families/comparison.md")
    per_fold = {family: values.dropna().tolist() for family, values in best.iterrows()}
    log_figure(metrics.ranking_figure(
        per_fold, title="Best inner-validation AUC per fold, by family (± 1 std)",
        xlabel="ROC AUC on each fold's inner validation part"), "figures/families.png")
    return table


def markdown(table: pd.DataFrame) -> str:
    """Returns the comparison as a Markdown table (AUC as mean ± std)."""
    lines = ["| family | best val AUC per fold | trials | weights | s / epoch | experts won |",
             "| --- | --- | --- | --- | --- | --- |"]
    for family, row in table.iterrows():
        lines.append(f"| {family} | {row['val_auc_mean']:.3f} ± {row['val_auc_std']:.3f} | "
                     f"{int(row['trials'])} | {row['params']:.0f} | "
                     f"{row['seconds_per_epoch']:.2f} | {int(row['experts_won'])} |")
    return "\n".join(lines) + "\n"
