"""Speech emotion recognition on RAVDESS: data, features, models, training, evaluation, Hub, inference."""
