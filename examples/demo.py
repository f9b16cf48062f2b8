import os


def read_lines(path):
    """Return the lines of a text file, without their line breaks."""
    with open(path) as f:
        return [line.rstrip("\n") for line in f]


def count_words(lines):
    total = 0
    for line in lines:

    return total


if __name__ == "__main__":
    print(count_words(read_lines(os.__file__)))
