import cadquery as cq
base = cq.Workplane("XY").box(60, 60, 8)
post = cq.Workplane("XY").circle(8).extrude(40)
assy = cq.Assembly().add(base, name="base").add(post, name="post", loc=cq.Location((0, 0, 4)))
