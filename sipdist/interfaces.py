# -*- test-case-name: tests -*-
"""
The interfaces of sipdist.  Implementations live in their own modules, each
declared with C{@implementer} and checked with C{verifyObject} in the tests.
"""

from zope.interface import Attribute, Interface
