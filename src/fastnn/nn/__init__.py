"""Layers and models: Module, Parameter, Sequential, Dense, Conv2d, MaxPool2d, AvgPool2d,
GlobalAvgPool2d, BatchNorm1d, BatchNorm2d, Dropout, Flatten, Reshape and the activation
layers."""

from .activations import ELU, GELU, LeakyReLU, ReLU, Sigmoid, Softmax, Softplus, Tanh
from .conv import Conv2d
from .layers import Dense, Dropout, Flatten, Reshape
from .module import Module, Parameter
from .normalization import BatchNorm1d, BatchNorm2d
from .pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from .sequential import Sequential

__all__ = ["AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv2d", "Dense", "Dropout", "ELU",
           "Flatten", "GELU", "GlobalAvgPool2d", "LeakyReLU", "MaxPool2d", "Module", "Parameter",
           "ReLU", "Reshape", "Sequential", "Sigmoid", "Softmax", "Softplus", "Tanh"]
