"""How a label shows in words: client cue words, face/voice descriptions, therapist templates.

* text: a client utterance holds one cue word of the emotion (:data:`TEXT_CUES`). A therapist
  utterance is a generation target, so its text follows the true labels (opener and template
  above); only its picture, tone and description are noisy.
* description: the generated face/voice description (appended to the utterance in the split
  files, as in the real ones) holds a face cue word and a voice cue word of its own vocabularies
  (:data:`DESCRIPTION_CUES`, :data:`VOICE_CUES`).


This module holds text only (no media code), so the tiny tokenizer's corpus can take
:func:`synthetic_vocabulary` from it.
"""

from __future__ import annotations

from multimood.data.labels import (
    EMOTIONS,
)

TEXT_CUES: dict[str, tuple[str, ...]] = {
    "neutral": ("okay", "fine", "alright", "settled"),
    "depression": ("hopeless", "empty", "numb", "worthless"),
    "anger": ("furious", "angry", "outraged", "irritated"),
    "disgust": ("disgusted", "sickened", "repulsed", "revolted"),
    "joy": ("happy", "glad", "delighted", "cheerful"),
    "sadness": ("sad", "heartbroken", "tearful", "sorrowful"),
    "fear": ("scared", "afraid", "terrified", "frightened"),
}

DESCRIPTION_CUES: dict[str, tuple[str, ...]] = {
    "neutral": ("composed", "attentive", "even"),
    "depression": ("withdrawn", "listless", "drained"),
    "anger": ("tense", "hostile", "flushed"),
    "disgust": ("grimacing", "recoiling", "sneering"),
    "joy": ("beaming", "smiling", "lively"),
    "sadness": ("teary", "downcast", "mournful"),
    "fear": ("trembling", "wide-eyed", "jittery"),
}

DESCRIPTION_VERBS = ("looks", "seems", "appears")
DESCRIPTION_SETTINGS = (
    "sitting on a couch",
    "in a quiet office",
    "facing the camera",
    "leaning forward in a chair",
    "near a window",
)

VOICE_CUES: dict[str, tuple[str, ...]] = {
    "neutral": ("steady", "level"),
    "depression": ("flat", "monotone"),
    "anger": ("loud", "sharp"),
    "disgust": ("curt", "scornful"),
    "joy": ("bright", "warm"),
    "sadness": ("soft", "breaking"),
    "fear": ("shaky", "hushed"),
}

DESCRIPTION_VOICES = (
    "The voice is {cue}.",
    "The voice sounds {cue}.",
    "The tone of voice is {cue}.",
)
# (category as the real split files spell it, topic phrase, what happened)
PROBLEM_TYPES: tuple[tuple[str, str, str], ...] = (
    (
        "Breakups or Divorce",
        "the breakup",
        "My partner ended our relationship last month",
    ),
    (
        "Job Loss or Career Setbacks",
        "losing my job",
        "I was let go from my job in the spring",
    ),
    ("Bereavement", "my father's death", "My father died after a short illness"),
    ("Occupational burnout", "work", "I have been working late every night for a year"),
    (
        "The relationship with friends and family",
        "my family",
        "My family keeps arguing about money",
    ),
    ("Parental Influence", "my mother", "My mother still decides everything for me"),
    (
        "Childhood Shadow",
        "my childhood",
        "I keep dreaming about the house I grew up in",
    ),
    ("Illness Coping", "my illness", "The doctors found a problem with my heart"),
    (
        "Therapeutic Relationship",
        "therapy",
        "I am not sure these sessions are helping me",
    ),
    (
        "Post-Traumatic Stress Disorder",
        "the accident",
        "I was in a car accident two years ago",
    ),
)

CLIENT_TEMPLATES = (
    "I feel {cue} about {topic}.",
    "Honestly, {topic} leaves me {cue}.",
    "When I think of {topic}, I get {cue}.",
    "I am {cue}, and it is because of {topic}.",
    "You know, I was {cue} all week.",
    "It is {topic} again. I am just {cue}.",
    "I do not know why, but I feel {cue}.",
    "Well, {cue} is the word for it.",
)

SITUATION_TEMPLATE = "{event}. Since then I have felt {cue} most days."
RESPONSE_OPENERS: dict[str, str] = {
    "neutral": "",
    "depression": "That sounds heavy.",
    "anger": "That is not fair to you.",
    "disgust": "That must be hard to stomach.",
    "joy": "That is good to hear.",
    "sadness": "I am sorry you are going through this.",
    "fear": "That sounds frightening.",
}

RESPONSE_TEMPLATES: dict[str, str] = {
    "Open question": "What is it about {topic} that makes you feel {cue}?",
    "Approval": "You did well to face {topic}.",
    "Self-disclosure": "I have also felt {cue} about something like {topic}.",
    "Restatement": "So {topic} leaves you feeling {cue}.",
    "Interpretation": "It seems that {topic} touches something deeper in you.",
    "Advisement": "Perhaps you could take one small step with {topic} this week.",
    "Communication Skills": "I hear you. Please go on.",
    "Structuring the therapy": "Let us spend today talking about {topic}.",
    "Guiding the Pace and Depth of the Conversation": "Let us slow down and stay with that feeling for a moment.",
    "Others": "I see. Let us continue.",
}


def synthetic_vocabulary() -> list[str]:
    """Lines holding every word the synthetic generators write (for the tiny tokenizer's corpus)."""
    lines = []
    for emotion in EMOTIONS:
        cues, desc = TEXT_CUES[emotion], DESCRIPTION_CUES[emotion]
        for i, template in enumerate(CLIENT_TEMPLATES):
            topic = PROBLEM_TYPES[i % len(PROBLEM_TYPES)][1]
            lines.append(template.format(cue=cues[i % len(cues)], topic=topic))
        for i, cue in enumerate(desc):
            verb = DESCRIPTION_VERBS[i % len(DESCRIPTION_VERBS)]
            setting = DESCRIPTION_SETTINGS[i % len(DESCRIPTION_SETTINGS)]
            voice_cues = VOICE_CUES[emotion]
            voice = DESCRIPTION_VOICES[i % len(DESCRIPTION_VOICES)].format(
                cue=voice_cues[i % len(voice_cues)]
            )
            lines.append(f"The speaker {verb} {cue}, {setting}. {voice}")
        if RESPONSE_OPENERS[emotion]:
            lines.append(RESPONSE_OPENERS[emotion])
    for i, (strategy, template) in enumerate(RESPONSE_TEMPLATES.items()):
        emotion = EMOTIONS[i % len(EMOTIONS)]
        topic = PROBLEM_TYPES[i % len(PROBLEM_TYPES)][1]
        lines.append(template.format(topic=topic, cue=TEXT_CUES[emotion][0]))
        lines.append(strategy)
    lines.append("The speaker is " + ", ".join(DESCRIPTION_SETTINGS) + ".")
    for problem, topic, event in PROBLEM_TYPES:
        lines.append(f"{problem}: {SITUATION_TEMPLATE.format(event=event, cue='hopeless')} {topic}")
    return lines
