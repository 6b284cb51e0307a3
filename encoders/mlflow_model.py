"""MLflow *models-from-code* script for the encoder: `mlflow.pyfunc.log_model(python_model=<this file>)`.

Why a script and not a `PythonModel` instance: an instance is cloudpickled into the model folder
together with everything it references (here a torch module), which ties the model to the exact
Python and library versions that pickled it and runs arbitrary code on load. With models-from-code
MLflow copies this file, stores no pickle, and at load time executes it; `load_context` then
rebuilds the encoder from the logged `bundle` artifact (adapter safetensors, tokenizer, optional
base model folder, optional sequence tower: see `encoders.packaging`).

Nothing in recsys imports this module: MLflow runs it. It needs the `recsys` distribution (the
`encoders` package) installed where the model is loaded.

Loading and predicting:

    model = mlflow.pyfunc.load_model("models:/recsys-encoder@champion")
    model.predict(pandas.DataFrame({"text": [...]}))                       # item text vectors
    model.predict(frame_with_item_id_and_text, params={"kind": "index"})   # index vectors
    model.predict(frame_with_history_column, params={"kind": "user"})      # user vectors

`model_config={"device": "cpu"}` at load pins the device (default "auto": CUDA when available).
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from encoders.packaging import EncoderBundle, predict_frame

BUNDLE_ARTIFACT = "bundle"


class EncoderModel(PythonModel):
    """Thin pyfunc shell over `encoders.packaging.EncoderBundle`."""

    def load_context(self, context) -> None:
        config = getattr(context, "model_config", None) or {}
        device = config.get("device")
        device = None if device in (None, "auto") else device
        self.bundle = EncoderBundle.load(context.artifacts[BUNDLE_ARTIFACT], device=device)

    # A DataFrame hint tells MLflow not to infer a schema from type hints: the signature logged with
    # the model (jobs/log_encoder.py) describes the columns, including the optional list columns.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        return predict_frame(self.bundle, model_input, params)


mlflow.models.set_model(EncoderModel())
