"""Everyday prompts a demo visitor types: greetings, questions, commands, facts and open requests.

Written by hand for the demo test, apart from the demo's training grammar (which generates its
questions from templates), so the test measures how the demo copes with what people really ask."""

from __future__ import annotations

EVERYDAY_PROMPTS: tuple[str, ...] = (
    # greetings and small talk
    "Hello!", "Hi there.", "Hey, what's up?", "Good evening.", "Good morning to you!", "How are you today?",
    "How is it going?", "Nice to meet you.", "Who are you?", "What is your name?", "Are you a robot?",
    "Thanks for your help!", "See you later.", "How was your day?", "Long time no see!",
    # questions
    "What should I cook for dinner?", "What is the best way to relax?", "Where should I go on holiday?",
    "Why is the sky blue?", "How do stars form?", "What is your favourite food?", "What do you think about rain?",
    "Can you recommend a book?", "What time is it?", "How far away is the moon?", "What makes a good friend?",
    "How do I stay healthy?", "Is it going to rain tomorrow?", "What do you do for fun?", "What is love?",
    "How can I sleep better?", "What should I wear today?", "Which season do you like best?",
    "How do I learn to swim?", "What is the meaning of life?", "Do you like music?", "What is your hobby?",
    "Where do you live?", "How old are you?", "What are you doing right now?", "Can you keep a secret?",
    "What did you eat for breakfast?", "Why do cats purr?", "How do plants grow?", "What is a good gift for my mother?",
    # commands
    "Write a short poem.", "Tell me a joke.", "Describe your perfect day.", "Explain how a boat floats.",
    "Give me three ideas for lunch.", "Summarize your week.", "Tell me about your favourite topic.",
    "Write a story about a dragon.", "List some things to do on a rainy day.", "Describe the ocean.",
    "Tell me about the stars.", "Write a letter to a friend.", "Make up a riddle.", "Describe a beautiful garden.",
    "Tell me what you know about bread.", "Give me some encouragement.", "Write a haiku about the sea.",
    "Recommend a recipe.", "Explain gravity to a child.", "Tell me how to make tea.", "Describe your home.",
    "Write a song about the moon.", "Plan a picnic for me.", "Tell me about your family.", "Invent a new holiday.",
    "Suggest a name for my cat.", "Describe the weather today.", "Tell me something funny.",
    # facts
    "Tell me a fact about space.", "Share a fun fact about food.", "What is the tallest mountain?",
    "How many planets are there?", "What is the capital of France?", "Tell me about the history of sailing.",
    "What do bees do?", "Teach me a new word.", "Tell me about tomatoes.", "How does the wind work?",
    "What is the biggest animal?", "Tell me about the ocean tides.", "How hot is the sun?",
    "Tell me about an interesting place.", "What is a comet?",
    # open requests
    "I feel sad today.", "I'm hungry.", "I can't decide what to do.", "I need some motivation.",
    "Help me plan my weekend.", "I want to learn something new.", "Talk to me about anything.",
    "Surprise me.", "Say something nice.", "Cheer me up.", "I am going on a trip tomorrow.",
    "My friend is visiting this weekend.", "I just moved to a new city.", "I want to start a garden.",
    "I bought a telescope.", "I'm learning to cook.", "I can't sleep.", "What would you do if you were me?",
    "Any advice for a beginner?", "Let's chat.",
)  # fmt: skip
