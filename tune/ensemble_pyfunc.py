"""The registered model's code: an MLflow pyfunc around `mammo_core.predictor`.

Logged as a code file (MLflow "models from code"), with `mammo_core` shipped beside it
through `code_paths`, so loading the model needs neither this project nor pickles.

    model = mlflow.pyfunc.load_model("models:/mammo-microcal@champion")
    model.predict(patches)   # (N, 60, 60) or (N, 60, 60, 1); uint8, uint16, int or float
    model.predict(table)     # a row per image: 3600 pixel columns, or base64 PNG/PGM strings

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

    # np.ndarray is one of the hints from which MLflow infers no schema: it then neither
    # validates nor converts, and hands over whatever the request held (an array, a table,
    # named arrays), which `patches_of` reads. (No hint at all draws MLflow's warning.)
    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        """Returns one row per patch (or pair).

        Bad input raises MlflowException (INVALID_PARAMETER_VALUE) naming the problem, which
        `mlflow models serve` answers with HTTP 400 rather than 500.
        """
        try:
            out = self.predictor.predict(self.predictor.patches_of(model_input))
        except PatchError as err:
            raise MlflowException.invalid_parameter_value(str(err)) from err
        return self.predictor.frame(out)


set_model(MammoEnsemble())
