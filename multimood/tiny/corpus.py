"""Text the tiny tokenizer is trained on.

Byte-level BPE can encode any text; the corpus only decides which merges exist, so it holds the
words our prompts, labels and synthetic dialogues use most, plus everyday conversational English.
"""

from __future__ import annotations

from collections.abc import Iterator

from multimood.data.labels import DFEW_LABELS, EMOTIONS, STRATEGIES
from multimood.data.synthetic.text import synthetic_vocabulary

_CONVERSATION = """\
I have been feeling tired for weeks and I do not know why. Tell me more about that.
It started when I moved to the new city. How did the move feel for you?
Honestly, I was scared. I did not sleep well and I kept thinking about my family.
That sounds really hard. You carried a lot on your own.
My mother called every night, but I did not want to talk to her.
What do you think stopped you from talking to her?
Maybe I was angry. She always tells me what to do, and I hate it.
It seems that her advice feels like control to you.
Yes, exactly. I want to decide for myself. I am an adult now.
You want her to trust you. What would it look like if she did?
She would listen. She would ask me how I am, and she would wait for the answer.
Let us take a moment with that. You deserve to be heard.
I feel better when I say it out loud. Thank you for listening.
We have about ten minutes left today. Shall we talk about next week?
I am not sure I can come next week. Work is crazy and my boss is angry all the time.
I understand. We can find a time that works for you.
Sometimes I think nobody cares. Then I feel guilty for thinking that.
Those feelings can live side by side. It is okay to feel both.
When I was a child, my father left. I never talked about it.
That must have been painful. How old were you when he left?
I was seven. I remember the door, and the rain, and my mother crying in the kitchen.
You remember it very clearly. It still matters to you today.
I laughed at the party, but inside I felt empty and alone.
What was going on for you in that moment?
I wanted to go home. I was disgusted with myself for drinking so much.
You are being hard on yourself. What would you say to a friend in the same place?
I would tell her it is fine, that everyone makes mistakes. That is good advice.
Maybe you could offer yourself the same kindness. I will try. I promise I will try.
The speaker looks calm, speaks softly and keeps eye contact. The voice is low and steady.
The speaker frowns, looks down and sighs. The voice trembles and gets quieter.
The speaker raises the voice, gestures with both hands and leans forward.
The speaker smiles, laughs and speaks quickly with a bright voice.
"""

_PROMPT_WORDS = """\
[CONTEXT] Problem: Situation: [CURRENT CONTEXT] Video: Audio: Chat history: Client utterance:
[OUTPUT FORMAT] Client's emotion: Therapist's emotion: Therapist's strategy: Therapist's response:
Now, as the 'Therapist', predict the Client's emotion, Therapist's emotion, and strategy, then craft an empathy response.
Step 1: Understand the context and conversation content. Step 2: Predict and justify.
Step 3: Craft an empathy response using Therapist's emotion and strategy, aligning with Client's perspective,
avoiding negative triggers, and promoting well-being. Step 4: Revise the response, avoid hurting feelings,
and consider response impact. Client Therapist user assistant system. Happy Sad Neutral Angry Surprise Disgust Fear.
What emotion does the person in the video show? The person in the video shows
"""


def tokenizer_corpus(repeats: int = 4) -> Iterator[str]:
    """Lines of training text; repeated so that frequent words pass the merge threshold."""
    labels = " ".join([*EMOTIONS, *STRATEGIES, *DFEW_LABELS])
    lines = [
        *_CONVERSATION.splitlines(),
        *_PROMPT_WORDS.splitlines(),
        labels,
        labels.lower(),
        # The synthetic datasets' templates and cue words, so they split into few tokens.
        *synthetic_vocabulary(),
    ]
    for _ in range(repeats):
        yield from lines
