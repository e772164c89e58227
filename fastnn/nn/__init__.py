"""Layers and models: Module, Parameter, Sequential, Dense and the activation layers."""

from .activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .layers import Dense
from .module import Module, Parameter
from .sequential import Sequential

__all__ = ["Dense", "LeakyReLU", "Module", "Parameter", "ReLU", "Sequential", "Sigmoid",
           "Softmax", "Tanh"]
