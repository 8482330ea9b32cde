import cadquery as cq

result = cq.Workplane("XY").box(40, 30, 20).faces(">Z").shell(-2)
show_object(result, name="open box")
