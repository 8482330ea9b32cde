from cadquery import Workplane
plate = Workplane("XY").box(80, 60, 10).faces(">Z").workplane().rect(50, 30, forConstruction=True).vertices().cboreHole(6, 10, 4)
