"""FER2013 label set.

Source: Goodfellow et al., "Challenges in Representation Learning: A report on three machine learning contests"
(arXiv:1307.0414); Kaggle's ``fer2013.csv`` column ``emotion``: 0=Angry, 1=Disgust, 2=Fear, 3=Happy, 4=Sad,
5=Surprise, 6=Neutral.
"""

LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES: int = len(LABELS)

#: Valence (pleasantness, -1..1) of each FER2013 label, in ``LABELS`` order. The signs follow Russell's circumplex
#: model of affect (Russell 1980, "A circumplex model of affect", J. Pers. Soc. Psychol. 39(6)); the magnitudes
#: are the rounded valence coordinates of the corresponding basic emotions in that model's figure. Surprise is
#: placed slightly positive and neutral at 0. Valence of a face = sum(p_k * VALENCE[k]).
VALENCE: tuple[float, ...] = (-0.7, -0.7, -0.6, 0.9, -0.7, 0.3, 0.0)

#: Arousal (activation, -1 calm .. 1 excited) of each FER2013 label, in ``LABELS`` order, from the same model
#: (Russell 1980, Fig. 2's arousal coordinates, rounded): angry ("angry") 0.8, fear ("afraid") 0.8, happy
#: ("happy") 0.2, sad ("sad") -0.4, surprise ("astonished") 0.9. Disgust is not one of that study's 28 words; it is
#: placed at a moderate 0.4 (its rating between "annoyed" and "distressed" in later circumplex studies, e.g. Russell
#: & Barrett 1999), neutral at 0. Arousal of a face = sum(p_k * AROUSAL[k]).
AROUSAL: tuple[float, ...] = (0.8, 0.4, 0.8, 0.2, -0.4, 0.9, 0.0)


def valence_of(probabilities) -> float:
    """Valence of a face or of mean probabilities: ``sum(p_k * VALENCE[k])``, -1..1 (``probabilities``: 7 floats in
    ``LABELS`` order)."""
    return float(sum(float(p) * v for p, v in zip(probabilities, VALENCE, strict=True)))


def arousal_of(probabilities) -> float:
    """Arousal of a face or of mean probabilities: ``sum(p_k * AROUSAL[k])``, -1..1 (``probabilities``: 7 floats
    in ``LABELS`` order)."""
    return float(sum(float(p) * a for p, a in zip(probabilities, AROUSAL, strict=True)))


#: Accepted folder/alias names for each label (case-insensitive) in image-folder datasets.
LABEL_ALIASES: dict[str, int] = {
    **{name: i for i, name in enumerate(LABELS)},
    "anger": 0,
    "disgusted": 1,
    "fearful": 2,
    "happiness": 3,
    "sadness": 4,
    "surprised": 5,
}
