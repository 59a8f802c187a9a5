"""Planning: a training configuration derived from the store's fingerprint and a compute
budget, as nnU-Net derives its configuration from a dataset's (docs/planning.md).

``fingerprint`` reads what the data is, ``rates`` times candidate models on the device,
``rules`` turns both into choices with their reasons, ``planner`` runs the three, and
``recipe`` writes the plan as a recipe and lays it over the train params."""
