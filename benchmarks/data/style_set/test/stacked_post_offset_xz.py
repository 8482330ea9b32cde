import cadquery as cq

base = cq.Workplane("XZ").rect(100, 50).extrude(10)
post = cq.Workplane("XZ").workplane(offset=10).center(20, 0).rect(20, 20).extrude(40)
result = base.union(post)
