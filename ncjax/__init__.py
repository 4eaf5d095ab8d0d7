"""ncjax: neural collapse metrics, coupled and decoupled weight decay, in JAX.

Modules:
  metrics     every NC metric as a jitted function, and streaming class statistics
  optimizers  SGD, SGDW, Adam, AdamW, Signum, SignumW and their mixes with a
              coupled share of the decay, as Optax chains
  models      MLP, ResNet9, VGG9 and ViT in Flax NNX, exposing penultimate
              features and the classifier
  data        scikit-learn digits, MNIST and FashionMNIST IDX files, CIFAR-10
              python batches, TFDS, and a Gaussian mixture
  augment     random crops and flips on the device
  training    the data-parallel training loop, single runs and vmapped grids
  checkpoints Orbax checkpoints of a training run, for resuming it
  ufm         the unconstrained feature model, whole grids in one program
  theory      closed forms and simulations of the NC0 theorems
  analysis    grouping and summary statistics of run results
  results     atomic result files
  plotting    figures from run histories and sweeps
"""

from ncjax import analysis
from ncjax import augment
from ncjax import checkpoints
from ncjax import data
from ncjax import metrics
from ncjax import models
from ncjax import optimizers
from ncjax import plotting
from ncjax import results
from ncjax import theory
from ncjax import training
from ncjax import ufm

__version__ = "0.1.0"
