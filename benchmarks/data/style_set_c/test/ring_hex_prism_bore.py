import cadquery as cq
import math
side = 25.0
hex_prism = cq.Workplane("XY").polygon(6, 2 * side).extrude(15, taper=0)
hex_prism = hex_prism.faces(">Z").workplane().hole(side * math.sqrt(3) / 2)
