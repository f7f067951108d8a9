"""Calls a TF Serving gRPC endpoint with image files (`pip install tensorflow-serving-api grpcio`).

    python grpc_predict.py --server localhost:8500 photo.jpg other.png

Sends the files' encoded bytes to the `serving_bytes` signature and prints the
top-k labels the model returns.
"""

import argparse
import os
import sys

# Leading bytes of the formats the serving_bytes signature decodes (as in rest_request.py).
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


def read_image_file(path):
    """The bytes of an encoded image file; a `ValueError` if it is missing, empty or no JPEG/PNG/GIF/BMP."""
    if not os.path.isfile(path):
        raise ValueError(f"no such image file: {path}")
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(IMAGE_MAGIC):
        raise ValueError(f"{path} is {'empty (0 bytes)' if not data else 'not a JPEG/PNG/GIF/BMP image'}")
    return data


def predict_request(paths, model_name="vit", signature_name="serving_bytes"):
    """A `PredictRequest` holding the encoded bytes of `paths` as the `image_bytes` input."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    encoded = [read_image_file(path) for path in paths]  # refused here, not by the server after the upload
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(encoded, dtype=tf.string, shape=[len(encoded)]))
    return request


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--server", default="localhost:8500")
    parser.add_argument("--model-name", default="vit")
    args = parser.parse_args()

    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    try:
        request = predict_request(args.images, args.model_name)
    except ValueError as error:
        print(f"grpc_predict.py: error: {error}", file=sys.stderr)
        return 2
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(args.server))
    response = stub.Predict(request, timeout=30.0)
    labels = tf.make_ndarray(response.outputs["top_k_labels"])
    probabilities = tf.make_ndarray(response.outputs["top_k_probabilities"])
    for path, row, values in zip(args.images, labels, probabilities):
        print(path)
        for label, probability in zip(row, values):
            print(f"  {probability:.4f}  {label.decode()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
