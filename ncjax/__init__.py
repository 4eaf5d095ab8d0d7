"""ncjax: neural collapse metrics and optimizers in JAX."""
