"""Layers and models: Module, Parameter, Sequential, Dense, Dropout, Flatten and the
activation layers."""

from .activations import ELU, GELU, LeakyReLU, ReLU, Sigmoid, Softmax, Softplus, Tanh
from .layers import Dense, Dropout, Flatten
from .module import Module, Parameter
from .sequential import Sequential

__all__ = ["Dense", "Dropout", "ELU", "Flatten", "GELU", "LeakyReLU", "Module", "Parameter",
           "ReLU", "Sequential", "Sigmoid", "Softmax", "Softplus", "Tanh"]
