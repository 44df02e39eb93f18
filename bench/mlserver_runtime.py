"""An MLServer custom runtime for the service's ONNX model, for bench.protocols' comparison: onnxruntime with
the same session options as a service worker, every output of the model answered. MLServer imports it from
the model folder bench.protocols writes (model-settings.json names `mlserver_runtime.OnnxRuntime`); it runs
in MLServer's own venv, so it imports nothing of this repository."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(self.settings.parameters.extra.get("threads", 1))
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            self.settings.parameters.uri, options, providers=["CPUExecutionProvider"]
        )
        self._input_name = self.session.get_inputs()[0].name
        self._output_names = [output.name for output in self.session.get_outputs()]  # MLModel has `outputs`
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        values = self.session.run(None, {self._input_name: x})
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output(name, value)
                for name, value in zip(self._output_names, values, strict=True)
            ],
        )
