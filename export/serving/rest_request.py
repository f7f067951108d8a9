"""Builds TF Serving REST predict requests for a keras_vit SavedModel (standard library only).

    python rest_request.py photo.jpg other.png > request.json
    curl -d @request.json http://localhost:8501/v1/models/vit:predict

By default the request uses the `serving_bytes` signature: each file's bytes go
base64-encoded as `{"b64": ...}`, which TF Serving decodes before the model
sees them. `--signature serving_uint8` is not offered here: raw pixel arrays
need an image decoder (see ../README.md for that request's shape).
"""

import base64
import json
import sys


def bytes_request(paths, signature_name="serving_bytes"):
    """The JSON body for TF Serving's REST `:predict` with encoded image files."""
    instances = []
    for path in paths:
        with open(path, "rb") as f:
            instances.append({"image_bytes": {"b64": base64.b64encode(f.read()).decode("ascii")}})
    return {"signature_name": signature_name, "instances": instances}


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python rest_request.py IMAGE... > request.json")
    json.dump(bytes_request(sys.argv[1:]), sys.stdout)
