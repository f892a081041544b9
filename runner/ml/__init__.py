"""Models and their training: dataset building, seeded training with early stopping, torch forecasters."""
