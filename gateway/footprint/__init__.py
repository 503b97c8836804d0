"""Energy and carbon of jobs: the model (model.py), its settlement on jobs and array tasks
(settle.py), aggregates (usage.py), everyday equivalents (equivalents.py) and the public
transparency report with its disclosure control (report.py, folding.py). No web framework here.
"""
