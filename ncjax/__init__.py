"""ncjax: neural collapse metrics, coupled and decoupled weight decay, in JAX.

Modules:
  metrics     every NC metric as a jitted function, and streaming class statistics
  optimizers  SGD, SGDW, Adam, AdamW, Signum, SignumW and the Adam-AdamW mix
              as Optax chains
  models      Flax NNX models exposing penultimate features and the classifier
  data        scikit-learn digits and MNIST IDX files
  training    the jitted training loop with metrics over training
  results     atomic result files
  plotting    figures from run histories
"""

from ncjax import data
from ncjax import metrics
from ncjax import models
from ncjax import optimizers
from ncjax import plotting
from ncjax import results
from ncjax import training

__version__ = "0.1.0"
