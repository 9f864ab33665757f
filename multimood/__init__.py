"""MultiMood: plain-torch parts (data, models, rewards, RL maths, metrics). Never imports lightning."""

__version__ = "0.1.0"
