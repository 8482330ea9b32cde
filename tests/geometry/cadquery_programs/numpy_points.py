import cadquery as cq
import numpy as np

angles = np.linspace(0, 2 * np.pi, 6, endpoint=False)
points = [(float(15 * np.cos(a)), float(15 * np.sin(a))) for a in angles]
result = cq.Workplane("XY").circle(20).extrude(5).faces(">Z").workplane().pushPoints(points).hole(3)
