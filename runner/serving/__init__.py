"""A run's whole strategy as a served model: raw bars in, the weights to hold out (``strategy``), the file MLflow's
models-from-code loads it from (``model_code``), and its packaging from a finished run (``packaging``)."""
