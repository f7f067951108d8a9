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
import os
import sys

# Leading bytes of the formats the SavedModel's serving_bytes signature decodes: JPEG, PNG, GIF, BMP.
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


def read_image_file(path):
    """The bytes of an encoded image file; a `ValueError` if it is missing, empty or no JPEG/PNG/GIF/BMP.

    TF Serving would refuse the whole request for one bad instance, after the
    upload: better to say which file here.
    """
    if not os.path.isfile(path):
        raise ValueError(f"no such image file: {path}")
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(IMAGE_MAGIC):
        raise ValueError(f"{path} is {'empty (0 bytes)' if not data else 'not a JPEG/PNG/GIF/BMP image'}")
    return data


def bytes_request(paths, signature_name="serving_bytes"):
    """The JSON body for TF Serving's REST `:predict` with encoded image files."""
    instances = [{"image_bytes": {"b64": base64.b64encode(read_image_file(path)).decode("ascii")}} for path in paths]
    return {"signature_name": signature_name, "instances": instances}


def main(paths):
    if not paths:
        print("usage: python rest_request.py IMAGE... > request.json", file=sys.stderr)
        return 2
    try:
        body = bytes_request(paths)  # every file is checked before anything is written
    except ValueError as error:
        print(f"rest_request.py: error: {error}", file=sys.stderr)
        return 2
    json.dump(body, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
