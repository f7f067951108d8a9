"""From a trained model to what runs on servers and phones, with its parity measured.

    export.py        `export_model` and `keras-vit export`: everything below, in one folder
    saved_model.py   a SavedModel for TF Serving, three signatures
    litert.py        LiteRT files (float32, float16, int8) and their runtime
    onnx.py          an ONNX file for ONNX Runtime (optional packages), and its runtime
    parity.py        the report: does each artifact still compute the Keras model?
    predict.py       `keras-vit predict` on any of them

Importing this package imports nothing else; TensorFlow comes with the modules
that need it.
"""
