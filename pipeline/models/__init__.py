"""Model registries: GAN architectures and downstream classifiers, keyed by the names params.yaml uses.

`GAN_ARCHS[name]` builds a (generator, discriminator) pair for an image shape and class count;
`CLASSIFIERS[name]` builds a classifier. The same dicts validate the config and dispatch the call.
"""

from pipeline.models.classifiers import CLASSIFIERS
from pipeline.models.gans import GAN_ARCHS

__all__ = ["CLASSIFIERS", "GAN_ARCHS"]
