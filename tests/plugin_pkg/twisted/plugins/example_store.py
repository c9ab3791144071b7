"""
Registers the example store provider of the test package.
"""

from examplestore import ExampleStoreParser

exampleStore = ExampleStoreParser()
