import ArgumentParser
import Readiness

print("placeholder")
