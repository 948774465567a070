# A small perl workload for `mallard record -- perl`: generate words into an array, join them
# into text and split it again, count words in a hash, sort by frequency and build strings.
# Deterministic.
use strict;
use warnings;
my @syll = qw(ka lo mi nu pe ra si to vu xe);
my (@words, %count);
my $seed = 1;
for my $i (1 .. 25000) {
    $seed = ($seed * 1103515245 + 12345) % 2147483648;
    push @words, join '', map { $syll[($seed >> (3 * $_)) % 10] } 0 .. (1 + $seed % 3);
}
for my $round (1 .. 3) {
    my $text = join ' ', map { $round % 2 ? uc $_ : $_ } @words;
    $count{lc $_}++ for split / /, $text;
}
my @top = (sort { $count{$b} <=> $count{$a} || $a cmp $b } keys %count)[0 .. 49];
my %pairs = map { ("$words[$_] $words[$_ + 1]" => $_) } 0 .. $#words - 1;
my $line = join ' ', map { "$_=$count{$_}" } @top;
print scalar(keys %count), ' ', scalar(keys %pairs), ' ', length($line), "\n";
