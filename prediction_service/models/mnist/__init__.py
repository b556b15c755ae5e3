"""The mnist model: a CNN read from images, served through ONNX Runtime in a process of its own."""

MNIST = "mnist"
