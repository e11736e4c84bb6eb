"""Build script. The pure-Python package needs nothing compiled; the C++/CUDA extension is added here."""

from setuptools import setup

setup()
