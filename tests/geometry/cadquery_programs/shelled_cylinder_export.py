import cadquery as cq

cup = cq.Workplane("XY").circle(10).extrude(15).faces(">Z").shell(-1)
cq.exporters.export(cup, "cup.step")  # lands in the scratch directory, which is emptied after
show_object(cup)
