"""The committed Triton model templates, shipped as package data.

One folder per Triton model: ``<model>/config.pbtxt`` and, for python-backend models,
``<model>/1/model.py``. ``towerserve export`` (:mod:`export.repository`) copies and fills them
in; it finds them with ``importlib.resources.files("model_repository")``, so the same code works
from a source checkout, an editable install and a plain ``pip install .`` (the wheel carries
them through ``[tool.setuptools.package-data]`` in ``pyproject.toml``).

This file only makes the folder a package; nothing here is meant to be imported. The folder
is a template source, never served as it is: Triton would read ``__pycache__`` as a model.
"""
