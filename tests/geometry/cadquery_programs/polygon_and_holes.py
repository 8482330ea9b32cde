import cadquery as cq
import math

sides = 6
result = (cq.Workplane("XY").polygon(sides, 40).extrude(10).faces(">Z").workplane()
          .rarray(10, 10, 2, 2).cboreHole(3, 5, 2))
debug(result)
print("area", math.pi)
