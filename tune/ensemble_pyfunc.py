"""The registered model's code: an MLflow pyfunc around `mammo_core.predictor`.

Logged as a code file (MLflow "models from code"), with `mammo_core` shipped beside it
through `code_paths`, so loading the model needs neither this project nor pickles.

    model = mlflow.pyfunc.load_model("models:/mammo-microcal@champion")
    model.predict(patches)   # (N, 60, 60) or (N, 60, 60, 1); uint8, uint16, int or float

Returns a DataFrame: probability, label (at the stored threshold), expert_0 ... expert_k;
for a task of several classes probability.<class>, label (the most probable class),
expert_0.<class> ...
"""
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from mammo_core.patches import PatchError
from mammo_core.predictor import load_predictor


class MammoEnsemble(PythonModel):
    def load_context(self, context) -> None:
        self.predictor = load_predictor(context.artifacts)

    # np.ndarray: MLflow neither infers a schema from it nor validates against one (the
    # input checks are ours, see mammo_core.patches), and it stops MLflow's type-hint warning.
    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        """Returns one row per patch.

        Bad input raises MlflowException (INVALID_PARAMETER_VALUE) naming the problem, which
        `mlflow models serve` answers with HTTP 400 rather than 500.
        """
        try:
            out = self.predictor.predict(as_array(model_input))
        except PatchError as err:
            raise MlflowException.invalid_parameter_value(str(err)) from err
        return self.predictor.frame(out)


def as_array(model_input) -> np.ndarray:
    """Returns the input as an array; MLflow hands over arrays, lists or (from tables) frames."""
    if isinstance(model_input, pd.DataFrame):
        raise PatchError("expected an array of patches shaped (N, rows, columns), got a table; "
                         "send {\"inputs\": [...]} rather than dataframe_split/records")
    if isinstance(model_input, dict):
        raise PatchError(f"expected an array of patches, got a mapping with keys "
                         f"{sorted(model_input)}")
    try:
        return np.asarray(model_input)
    except ValueError as err:  # ragged nested lists
        raise PatchError(f"patches must all have the same size: {err}") from err


set_model(MammoEnsemble())
