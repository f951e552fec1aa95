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
