"""Run an exported SavedModel the way tensorflow_model_server does, in a process that never imports sassnet_tf.

TensorFlow Serving loads a SavedModel into a TF1 ``Session`` with the ``serve`` tag, reads the SignatureDefs and runs
them by feeding and fetching the tensor names they list; at load it replays ``assets.extra/tf_serving_warmup_requests``.
This script does the same with the public TF1 API and writes what it saw:

    python tf1_serving_load.py INPUTS.npz OUT_DIR MODEL_DIR [MODEL_DIR ...]

INPUTS.npz holds volumes ``image*`` ([H, W, D] float32, each run through serving_default) and ``patches``
([N, ph, pw, pd, 1] float32). For the i-th model, OUT_DIR/<i>.npz gets ``serving_default/<image key>/<output>`` and
``segment_patches/<output>`` arrays; OUT_DIR/<i>.json the SignatureDefs (tensor names, dtypes, shapes), the metadata
JSON, the warm-up replay and the sassnet_tf modules this process imported (there must be none).
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import prediction_log_pb2


def describe(tensor_info) -> dict:
    shape = tensor_info.tensor_shape
    return {
        "name": tensor_info.name,
        "dtype": types_pb2.DataType.Name(tensor_info.dtype),  # DT_FLOAT, DT_UINT8, DT_STRING
        "shape": None if shape.unknown_rank else [d.size for d in shape.dim],
    }


def serve(model_dir: str, inputs: dict, out_npz: str, out_json: str) -> None:
    report = {"signatures": {}, "warmup": []}
    arrays = {}
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
        meta_graph = tf.compat.v1.saved_model.loader.load(sess, ["serve"], model_dir)
        signatures = meta_graph.signature_def
        for name, sig in signatures.items():
            report["signatures"][name] = {
                "method_name": sig.method_name,
                "inputs": {k: describe(v) for k, v in sig.inputs.items()},
                "outputs": {k: describe(v) for k, v in sig.outputs.items()},
            }

        def run(signature: str, feeds: dict) -> dict:
            sig = signatures[signature]
            keys = sorted(sig.outputs)
            values = sess.run([sig.outputs[k].name for k in keys], {sig.inputs[k].name: v for k, v in feeds.items()})
            return dict(zip(keys, values))

        for image_key in sorted(k for k in inputs if k.startswith("image")):
            for key, value in run("serving_default", {"image": inputs[image_key]}).items():
                arrays[f"serving_default/{image_key}/{key}"] = value
        for key, value in run("segment_patches", {"patches": inputs["patches"]}).items():
            arrays[f"segment_patches/{key}"] = value
        report["metadata_json"] = run("metadata", {"format": np.array(b"json", dtype=object)})["json"].decode("utf-8")

        warmup = os.path.join(model_dir, "assets.extra", "tf_serving_warmup_requests")
        for record in tf.compat.v1.io.tf_record_iterator(warmup):
            log = prediction_log_pb2.PredictionLog.FromString(record)
            request = log.predict_log.request
            signature = request.model_spec.signature_name or "serving_default"
            feeds = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            outputs = run(signature, feeds)
            report["warmup"].append({
                "model": request.model_spec.name,
                "signature": signature,
                "inputs": {k: list(v.shape) for k, v in feeds.items()},
                "outputs": {k: [str(v.dtype), list(v.shape)] for k, v in outputs.items()},
            })
    np.savez(out_npz, **arrays)
    report["sassnet_tf_modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "sassnet_tf")
    with open(out_json, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)


def main(argv: list) -> None:
    inputs_path, out_dir, *model_dirs = argv
    inputs = dict(np.load(inputs_path))
    for i, model_dir in enumerate(model_dirs):
        serve(model_dir, inputs, os.path.join(out_dir, f"{i}.npz"), os.path.join(out_dir, f"{i}.json"))


if __name__ == "__main__":
    main(sys.argv[1:])
