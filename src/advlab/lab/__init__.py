"""advlab lab: the lecture as an interactive local web page (FastAPI, one static page).

``create_lab_app(ModelRegistry([checkpoint]))`` builds the application; ``advlab lab`` serves it.
It sits above the serve layer: the black-box panel attacks the model through advlab's own
prediction API (advlab.serve), started in this process.
"""

from advlab.lab.app import create_lab_app
from advlab.lab.backdoor import LabBackdoorSettings
from advlab.lab.models import ModelRegistry

__all__ = ["LabBackdoorSettings", "ModelRegistry", "create_lab_app"]
