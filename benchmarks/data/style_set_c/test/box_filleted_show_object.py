import cadquery
part = cadquery.Workplane("XY").box(40, 40, 20).edges("|Z").fillet(4)
show_object(part, name="block", options={"color": "red"})
