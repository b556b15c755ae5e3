"""The penguins model: a KNN on bill and flipper length."""

PENGUINS = "penguins"
