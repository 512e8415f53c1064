"""Physical-world adversarial examples: a differentiable distribution of print-and-photo
transformations, Expectation over Transformation, a separate non-differentiable print-and-photo
simulation with Kurakin et al.'s destruction rate, and a universal printable patch."""

from advlab.attacks.physical.eot import EOTPGD
from advlab.attacks.physical.patch import UniversalPatch, patch_success_rate, place_patch
from advlab.attacks.physical.simulate import PrintPhotoSimulation, destruction_rate, measure_destruction
from advlab.attacks.physical.transforms import PrintPhotoTransforms

__all__ = ["EOTPGD", "PrintPhotoSimulation", "PrintPhotoTransforms", "UniversalPatch", "destruction_rate",
           "measure_destruction", "patch_success_rate", "place_patch"]
